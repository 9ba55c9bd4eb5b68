// Package dist holds what puts banger on a host: the systemd unit
// (bangerd.service, installed by `make install` and the .deb), the Debian
// package (nfpm.yaml, deb.sh, debian/) and the packager's own Go module
// (tools/, kept out of banger's go.mod). It has no Go code of its own: its
// tests check the unit, run `make install` into a temporary root, and build,
// inspect, install and purge the .deb in a throwaway dpkg root.
package dist
