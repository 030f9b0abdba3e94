"""Discord: its door, its signature check, its rendering and its REST client and transport."""
