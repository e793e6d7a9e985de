"""A state's diff of a file that holds secrets shows no secret, the one it held before included:
after a rotation the old value is no pillar secret any more."""
import pytest

from salt_mailha import glue
from salt_mailha.core.secret import Secret

CASES = [  # (file before, file after): the old secret must vanish, the new one too
    ('vrrp_instance X {\n    auth_pass "old-pw1"\n    advert_int 1\n}\n',
     'vrrp_instance X {\n    auth_pass "new-pw2"\n    advert_int 2\n}\n'),
    ('login="monitor"\npasswd="old-pw1"\ncheckinterval=5\n', 'login="monitor"\npasswd="new-pw2"\ncheckinterval=1\n'),
    ('[galera]\nwsrep_sst_auth = "sst:old-pw1"\n', '[galera]\nwsrep_sst_auth = "sst:new-pw2"\n'),
    ('dn = cn=Manager\ndnpass = "old-pw1"\n', 'dn = cn=Manager\ndnpass = "new-pw2"\n'),
    ('bind_pw = old-pw1\nserver_host = x\n', 'bind_pw = new-pw2\nserver_host = y\n'),
    # the setting is gone from the new file (VRRPv2 -> v3): nothing to match the old line against
    ('vrrp_instance X {\n    auth_type PASS\n    auth_pass "old-pw1"\n}\n', 'vrrp_instance X {\n}\n'),
]


@pytest.mark.parametrize("old,new", CASES)
def test_a_rotated_secret_is_not_in_the_diff(old, new):
    diff = glue.redacted_diff(old, new, "/etc/x.conf", [Secret("new-pw2")])
    assert "old-pw1" not in diff and "new-pw2" not in diff
    assert diff.count("\n-") >= 1  # the change is still shown


def test_other_changes_stay_readable():
    diff = glue.redacted_diff('passwd="a-pw"\ncheckinterval=50\n', 'passwd="a-pw"\ncheckinterval=1\n',
                              "/etc/ha.d/ldirectord.cf", [Secret("a-pw")])
    assert "-checkinterval=50" in diff and "+checkinterval=1" in diff and "a-pw" not in diff
