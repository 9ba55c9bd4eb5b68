package sandbox

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Record is what the host saw of one sandboxed run, read from
// /proc/<pid>/status of the bwrap process once it had exec'd (its
// credentials set), before the tool could exit.
type Record struct {
	Args   []string
	Pid    int
	UIDs   []string // real, effective, saved, filesystem
	GIDs   []string
	CapEff string
}

// audit, when set, sees a Record of every run (tests prove with it that no
// tool ran as root).
var audit atomic.Pointer[func(Record)]

// SetAudit installs f to see every run (nil removes it) and returns the
// previous one.
func SetAudit(f func(Record)) func(Record) {
	var old *func(Record)
	if f == nil {
		old = audit.Swap(nil)
	} else {
		old = audit.Swap(&f)
	}
	if old == nil {
		return nil
	}
	return *old
}

// observe reads the Uid, Gid and CapEff lines of a process's status.
func observe(pid int, args []string) Record {
	r := Record{Args: append([]string(nil), args...), Pid: pid}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return r
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid":
			r.UIDs = strings.Fields(v)
		case "Gid":
			r.GIDs = strings.Fields(v)
		case "CapEff":
			r.CapEff = strings.TrimSpace(v)
		}
	}
	return r
}

// Unprivileged reports whether the record shows no root id and no
// capability on the host.
func (r Record) Unprivileged() bool {
	if len(r.UIDs) != 4 || len(r.GIDs) != 4 || r.CapEff != "0000000000000000" {
		return false
	}
	for _, id := range append(append([]string{}, r.UIDs...), r.GIDs...) {
		if id == "0" {
			return false
		}
	}
	return true
}
