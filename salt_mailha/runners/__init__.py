"""Salt loader folder (see salt_mailha.get_runners_dirs); a package so pip installs it."""
