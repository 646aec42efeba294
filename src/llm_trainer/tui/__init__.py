"""The Textual dashboard: a second front end over the service layer."""
