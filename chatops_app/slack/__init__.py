"""Slack: its doors (HTTP and Socket Mode), its signature check, its Block Kit and its transport."""
