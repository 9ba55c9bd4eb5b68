package vmm

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"time"
)

// InfoOnce holds an engine's Info, probed on first use: both engines look
// their binary up (and ask its version) once.
type InfoOnce struct {
	once sync.Once
	info Info // set once by once
}

// Get returns the Info probe made on the first call.
func (o *InfoOnce) Get(probe func() Info) Info {
	o.once.Do(func() { o.info = probe() })
	return o.info
}

// BinaryVersion runs `path --version` (bounded to 5s) and returns its
// output, for the engine to pick its version from.
func BinaryVersion(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version failed: %v", path, err)
	}
	return string(out), nil
}

// AskState is State for an engine process that may be gone: a gone process
// is StateStopped, and so is one that ends while ask asks it.
func AskState(alive func() bool, ask func() (State, error)) (State, error) {
	if !alive() {
		return StateStopped, nil
	}
	s, err := ask()
	if err != nil && !alive() {
		return StateStopped, nil
	}
	return s, err
}
