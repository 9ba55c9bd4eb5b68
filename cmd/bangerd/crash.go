package main

import (
	"log/slog"
	"os"
	"syscall"
)

// crashEnv names a test hook: BANGER_TEST_CRASH_AFTER="create:engine" makes
// the daemon kill itself with SIGKILL right after that stage, so the crash
// tests can prove a restarted daemon reconciles every point of a create or
// delete. It is read once at start; unset in production.
const crashEnv = "BANGER_TEST_CRASH_AFTER"

func crashHook(log *slog.Logger) func(op, stage string) {
	target := os.Getenv(crashEnv)
	if target == "" {
		return nil
	}
	log.Warn("test crash hook armed", "after", target)
	return func(op, stage string) {
		if op+":"+stage == target {
			log.Warn("test crash hook: SIGKILL", "after", target)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
