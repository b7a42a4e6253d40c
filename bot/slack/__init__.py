"""The Slack adapter (slack-bolt, slack-sdk): transport, Block Kit rendering, identity, forms."""
