"""The one exception root of salt-mailha and its specific subclasses.

Execution and state modules turn these into ``CommandExecutionError`` / a failed state at the
Salt boundary; runners and beacons catch them at their loop boundary.
"""


class MailhaError(Exception):
    """Root of every error salt-mailha raises on purpose."""


class ValidationError(MailhaError):
    """The site pillar is invalid. Carries every problem found, not just the first.

    Each problem is ``(key, message)`` where ``key`` is the pillar path (``mailha:vips:db:address``)
    and ``message`` says what is wrong and how to fix it.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self):
        lines = [f"invalid mailha pillar ({len(self.problems)} problem(s)):"]
        lines += [f"  - pillar {key}: {msg}" for key, msg in self.problems]
        return "\n".join(lines)


class ParseError(MailhaError):
    """Output of a service (ipvsadm, grastate.dat, slapd, DNS) could not be understood."""


class CommandFailed(MailhaError):
    """A command or service call failed; the message names the object and what to do."""


class Refused(MailhaError):
    """A safety guard refused an action; the message is the reason (shown to operators)."""
