package netw

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// VMs get no IPv6: banger's bridge and ports have it switched off, never
// accept router advertisements or redirects, and the bridge table drops
// every IPv6 frame from a guest (RAs, router solicitations and redirects
// included) before the host's stack sees it.

// ipv6Conf is where the per-interface IPv6 sysctls live (a variable for
// tests).
var ipv6Conf = "/proc/sys/net/ipv6/conf/"

// hardenIPv6 sets accept_ra=0, accept_redirects=0 and disable_ipv6=1 on
// ifname (one of banger's own interfaces). A kernel without IPv6 is fine.
func hardenIPv6(ifname string) error {
	dir := ipv6Conf + ifname + "/"
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, kv := range [][2]string{{"accept_ra", "0"}, {"accept_redirects", "0"}, {"disable_ipv6", "1"}} {
		if err := os.WriteFile(dir+kv[0], []byte(kv[1]+"\n"), 0o644); err != nil {
			return fmt.Errorf("setting %s on %s: %w", kv[0], ifname, err)
		}
	}
	return nil
}
