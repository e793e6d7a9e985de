"""Salt loader folder (see salt_mailha.get_states_dirs); a package so pip installs it."""
