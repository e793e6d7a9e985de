"""Salt loader folder (fileserver backends); a package so pip installs it."""
