package progress

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Run runs fn as the stage name on rep: the stage starts, fn runs (it may
// attach a detail with rep.Detail while it does, shown live), and the stage
// ends with fn's error. A failure comes back as "<name> stage: <err>",
// wrapped with %w so an api error keeps its kind. Every multi-stage
// operation runs its steps through Run: a table of {name, fn} walked in
// order, stopping at the first error.
func Run(rep Reporter, name string, fn func() error) error {
	done := rep.Stage(name)
	err := fn()
	done(err)
	if err != nil {
		return fmt.Errorf("%s stage: %w", name, err)
	}
	return nil
}

// Logged returns a Reporter that passes everything on to rep and logs each
// stage to log: its start at Debug, its end at Info with the duration, the
// detail and the error as fields (log's own attributes, e.g. the image's
// name, come first). A nil rep is Nop; a nil log discards.
func Logged(rep Reporter, log *slog.Logger) Reporter {
	if rep == nil {
		rep = Nop{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &logged{rep: rep, log: log}
}

type logged struct {
	rep    Reporter
	log    *slog.Logger
	mu     sync.Mutex
	detail string // the running stage's detail; guarded by mu
}

func (l *logged) Stage(name string) func(error) {
	start := time.Now()
	l.log.Debug("stage started", "stage", name)
	done := l.rep.Stage(name)
	return func(err error) {
		done(err)
		l.mu.Lock()
		d := l.detail
		l.detail = ""
		l.mu.Unlock()
		l.log.Info("stage finished", "stage", name, "duration", time.Since(start).Round(time.Millisecond),
			"detail", d, "err", err)
	}
}

func (l *logged) Detail(text string) {
	l.mu.Lock()
	l.detail = text
	l.mu.Unlock()
	l.rep.Detail(text)
}

func (l *logged) Output(line string) { l.rep.Output(line) }
