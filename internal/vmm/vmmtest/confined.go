package vmmtest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// Confinement is what /proc/<pid>/status says about a process's privileges.
type Confinement struct {
	UIDs, GIDs []string // real, effective, saved, filesystem
	Groups     []string // supplementary groups
	CapEff     string
	NoNewPrivs string
	Seccomp    string // "2": a seccomp filter is installed
}

// ReadConfinement reads pid's Confinement from /proc.
func ReadConfinement(pid int) (Confinement, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Confinement{}, err
	}
	var c Confinement
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Uid":
			c.UIDs = f
		case "Gid":
			c.GIDs = f
		case "Groups":
			c.Groups = f
		case "CapEff":
			c.CapEff = strings.TrimSpace(v)
		case "NoNewPrivs":
			c.NoNewPrivs = strings.TrimSpace(v)
		case "Seccomp":
			c.Seccomp = strings.TrimSpace(v)
		}
	}
	return c, nil
}

// CheckConfined fails t unless the engine process pid runs as no uid or
// gid 0 (real, effective, saved, filesystem), with no capabilities, no new
// privileges, a seccomp filter (Seccomp: 2) and no supplementary group but
// those in allowed.
func CheckConfined(t *testing.T, pid int, allowed ...string) {
	t.Helper()
	c, err := ReadConfinement(pid)
	if err != nil {
		t.Fatalf("reading /proc/%d/status: %v", pid, err)
	}
	for _, id := range append(append([]string{}, c.UIDs...), c.GIDs...) {
		if id == "0" {
			t.Errorf("engine pid %d runs as root: Uid %v Gid %v", pid, c.UIDs, c.GIDs)
			break
		}
	}
	if len(c.UIDs) != 4 || len(c.GIDs) != 4 {
		t.Errorf("engine pid %d: Uid %v Gid %v not read", pid, c.UIDs, c.GIDs)
	}
	for _, g := range c.Groups {
		if !contains(allowed, g) {
			t.Errorf("engine pid %d has supplementary group %s (allowed: %v)", pid, g, allowed)
		}
	}
	if c.CapEff != "0000000000000000" {
		t.Errorf("engine pid %d has capabilities CapEff=%s", pid, c.CapEff)
	}
	if c.NoNewPrivs != "1" {
		t.Errorf("engine pid %d: NoNewPrivs=%q, want 1", pid, c.NoNewPrivs)
	}
	if c.Seccomp != "2" {
		t.Errorf("engine pid %d: Seccomp=%q, want 2 (a seccomp filter)", pid, c.Seccomp)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
