"""The Microsoft Teams app package's files (manifest and icons), shipped as package data so that
`dealbot teams package` can build the zip a Teams admin uploads from any installation."""
