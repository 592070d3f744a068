"""The challenge server: organiser CLI, HTTP API and pages, scoring workers, jury."""
