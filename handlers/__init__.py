"""Platform-neutral behaviour: the /crm grammar, its handlers, and the `Reply` they return."""
