// Package progress is how long-running work reports its stages and output
// without knowing who listens: the daemon's operation tracker (internal/ops)
// implements Reporter; tests and library callers use Nop or a Recorder.
package progress

import (
	"sync"
	"time"
)

// Reporter receives stage boundaries and streamed output lines.
type Reporter interface {
	// Stage marks the start of a named stage and returns the function that
	// ends it: done(nil) for success, done(err) for failure. A detail may be
	// attached with Detail before done.
	Stage(name string) (done func(err error))
	// Detail attaches a short note to the running stage ("reused tap-pool-3").
	Detail(text string)
	// Output streams one line of output (debootstrap, a build script).
	Output(line string)
}

// Nop discards everything.
type Nop struct{}

func (Nop) Stage(string) func(error) { return func(error) {} }
func (Nop) Detail(string)            {}
func (Nop) Output(string)            {}

// Recorded is one finished stage in a Recorder.
type Recorded struct {
	Name     string
	Duration time.Duration
	Err      error
	Detail   string
}

// Recorder keeps stages in memory (tests, benchmarks).
type Recorder struct {
	mu     sync.Mutex
	Stages []Recorded // guarded by mu
	Lines  []string   // guarded by mu
	detail string     // guarded by mu
}

func (r *Recorder) Stage(name string) func(error) {
	start := time.Now()
	return func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.Stages = append(r.Stages, Recorded{Name: name, Duration: time.Since(start), Err: err, Detail: r.detail})
		r.detail = ""
	}
}

func (r *Recorder) Detail(text string) {
	r.mu.Lock()
	r.detail = text
	r.mu.Unlock()
}

func (r *Recorder) Output(line string) {
	r.mu.Lock()
	r.Lines = append(r.Lines, line)
	r.mu.Unlock()
}

// Names returns the recorded stage names in order.
func (r *Recorder) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n []string
	for _, s := range r.Stages {
		n = append(n, s.Name)
	}
	return n
}
