"""Stand-ins for the services the factory talks to, as small HTTP servers on 127.0.0.1."""
