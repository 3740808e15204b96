"""Node daemon packages: learning, roles and transport."""
