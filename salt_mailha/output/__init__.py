"""Salt loader folder (outputters); a package so pip installs it."""
