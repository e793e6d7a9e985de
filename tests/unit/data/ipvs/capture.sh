#!/bin/sh
# How the ipvsadm fixtures in this directory were captured: run inside the qemu TCG guest of
# tests/support/qemu_ipvs.py, since replaced by tests/support/uml_ipvs.py (same run() call; the
# ipvsadm-*-schedflags.txt files come from its UML 7.2 kernel), e.g.
#   python -c "from tests.support.uml_ipvs import IpvsGuest as G; G().run(D, D+'/capture.sh')"
# with this file copied to D. Real DR traffic first so the connection counters are not zero.
set -x
OUT=$(dirname "$0")
ip netns add cl; ip netns add dir; ip netns add r1; ip netns add r2
ip link add br0 type bridge; ip link set br0 up
i=0
for ns in cl dir r1 r2; do
  i=$((i+1))
  ip link add v-$ns type veth peer name eth0 netns $ns
  ip link set v-$ns master br0 up
  ip -n $ns link set lo up; ip -n $ns link set eth0 up
  ip -n $ns addr add 10.99.88.$((i*10))/24 dev eth0
done
VIP=10.99.88.100
ip -n dir addr add $VIP/24 dev eth0
for ns in r1 r2; do
  ip -n $ns addr add $VIP/32 dev lo label lo:0
  ip netns exec $ns sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  mkdir -p /tmp/www-$ns; echo $ns > /tmp/www-$ns/index.html
  ip netns exec $ns busybox httpd -p 80 -h /tmp/www-$ns
done
D="ip netns exec dir ipvsadm"
$D -A -t $VIP:80 -s rr
$D -a -t $VIP:80 -r 10.99.88.30:80 -g -w 1
$D -a -t $VIP:80 -r 10.99.88.40:80 -g -w 1
$D -A -t $VIP:443 -s sh -p 300
$D -a -t $VIP:443 -r 10.99.88.30 -g -w 2
$D -a -t $VIP:443 -r 10.99.88.40 -g -w 0
$D -A -t $VIP:3306 -s wrr
$D -a -t $VIP:3306 -r 10.99.88.30:3306 -m -w 5
$D -a -t $VIP:3306 -r 10.99.88.40:3306 -i -w 1
$D -A -u $VIP:53 -s wlc
$D -a -u $VIP:53 -r 10.99.88.30:53 -g
$D -A -f 7 -s lc
$D -a -f 7 -r 10.99.88.40 -g -w 3
$D -A -t [2001:db8::100]:25 -s wrr
$D -a -t [2001:db8::100]:25 -r [2001:db8::30]:25 -m -w 1
$D -A -t $VIP:993 -s wrr
for n in 1 2 3 4 5 6; do ip netns exec cl curl -s -m 3 http://$VIP/ ; done
# one connection held open, so ActiveConn is not zero either
(sleep 20 | ip netns exec cl busybox nc $VIP 80 >/dev/null) &
sleep 1
$D -Ln > $OUT/ipvsadm-Ln.txt
$D -Ln --stats > $OUT/ipvsadm-Ln-stats.txt
$D -Ln --rate > $OUT/ipvsadm-Ln-rate.txt
$D -S -n > $OUT/ipvsadm-Sn.txt
$D -Ln --exact --stats > $OUT/ipvsadm-Ln-exact-stats.txt
$D -Ln -t $VIP:80 > $OUT/ipvsadm-Ln-t-one.txt
$D -Ln -t $VIP:81 > $OUT/ipvsadm-Ln-t-missing.txt 2>&1; echo "rc=$?" >> $OUT/ipvsadm-Ln-t-missing.txt
$D -C; $D -Ln > $OUT/ipvsadm-Ln-empty.txt; $D -S -n > $OUT/ipvsadm-Sn-empty.txt
# errors ipvsadm gives to bad edits (what our module must turn into clear messages)
$D -e -t $VIP:80 -r 10.99.88.30:80 -w 1 > $OUT/ipvsadm-e-missing.txt 2>&1; echo "rc=$?" >> $OUT/ipvsadm-e-missing.txt
ip netns exec dir sh -c 'echo -n $(ipvsadm --version)' > $OUT/ipvsadm-version.txt
uname -r > $OUT/kernel.txt
