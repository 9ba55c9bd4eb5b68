package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sessionID reads a process's session id from /proc/PID/stat.
func sessionID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" of the command name: state ppid pgrp session …
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 4 {
		return 0, fmt.Errorf("short stat line %q", s)
	}
	return strconv.Atoi(f[3])
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
