"""Salt loader folder (see salt_mailha.get_modules_dirs); a package so pip installs it."""
