"""Salt loader folder (see salt_mailha.get_beacons_dirs); a package so pip installs it."""
