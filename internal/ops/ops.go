// Package ops tracks long-running operations (vm create, image create, …) in
// memory so that callers can begin one, get its ID at once, and follow it.
//
// Lifecycle: Tracker.Begin creates an *Op in state running; the work reports
// through the Op (it is a progress.Reporter: stages, details, output lines);
// Op.Finish records the result or the error exactly once. Every mutation bumps
// the op's version, and Tracker.Wait long-polls for a version newer than the
// one a follower has seen. Finished operations are kept for a bounded history
// (the newest MaxFinished), then forgotten.
//
// What it trusts: not the output lines. They are often guest-written (a
// build script's output, a console tail), so each line is cut to
// MaxLineBytes (with a marker saying how much was dropped), an operation
// keeps at most DefaultMaxLines lines and DefaultMaxOutputBytes bytes (the
// oldest dropped first), and the output of finished operations together is
// held to DefaultMaxFinishedBytes (the oldest operations' output dropped
// first). Lines are stored as given: showing them safely is the reader's
// business (internal/termsafe on a terminal).
package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"banger/internal/api"
	"banger/internal/progress"
)

// Defaults for a Tracker's bounds.
const (
	DefaultMaxFinished = 200
	DefaultMaxLines    = 2000
	// MaxLineBytes is the longest output line kept; longer ones are cut
	// and marked.
	MaxLineBytes = 4 << 10
	// DefaultMaxOutputBytes bounds one operation's kept output.
	DefaultMaxOutputBytes = 1 << 20
	// DefaultMaxFinishedBytes bounds the output kept by finished
	// operations together.
	DefaultMaxFinishedBytes = 16 << 20
)

// Tracker holds operations in memory. The zero value is not usable: use
// NewTracker.
type Tracker struct {
	maxFinished      int
	maxLines         int
	maxBytes         int
	maxFinishedBytes int

	mu       sync.Mutex
	ops      map[string]*Op // guarded by mu
	finished []string       // guarded by mu; IDs of finished ops, oldest first
}

// NewTracker returns a Tracker keeping the newest maxFinished finished ops
// (DefaultMaxFinished when <= 0).
func NewTracker(maxFinished int) *Tracker {
	if maxFinished <= 0 {
		maxFinished = DefaultMaxFinished
	}
	return &Tracker{maxFinished: maxFinished, maxLines: DefaultMaxLines, maxBytes: DefaultMaxOutputBytes,
		maxFinishedBytes: DefaultMaxFinishedBytes, ops: map[string]*Op{}}
}

// Op is one operation. It implements progress.Reporter; all its methods are
// safe for concurrent use, including concurrent stages.
type Op struct {
	t *Tracker

	mu      sync.Mutex
	snap    api.Operation      // guarded by mu
	version uint64             // guarded by mu
	changed chan struct{}      // guarded by mu; closed and replaced on each change
	running []int              // guarded by mu; indexes of running stages, oldest first
	lines   []string           // guarded by mu; the newest output lines
	bytes   int                // guarded by mu; the bytes in lines
	first   int                // guarded by mu; absolute index of lines[0]
	cancel  context.CancelFunc // guarded by mu
}

var _ progress.Reporter = (*Op)(nil)

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Begin starts tracking a new running operation of kind ("vm.create") on
// target (a VM or image name, possibly empty).
func (t *Tracker) Begin(kind, target string) *Op {
	op := &Op{
		t:       t,
		changed: make(chan struct{}),
		version: 1,
		snap: api.Operation{
			ID: newID(), Kind: kind, Target: target, State: api.OpRunning,
			Stages: []api.Stage{}, Started: time.Now().UTC(),
		},
	}
	t.mu.Lock()
	t.ops[op.snap.ID] = op
	t.mu.Unlock()
	return op
}

func (t *Tracker) get(id string) (*Op, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	op, ok := t.ops[id]
	return op, ok
}

func notFound(id string) error {
	return api.NotFound("operation %q not found", id).
		WithFix("operations are kept in memory only until the daemon restarts; start the work again")
}

// Get returns a snapshot of operation id.
func (t *Tracker) Get(id string) (api.Operation, bool) {
	op, ok := t.get(id)
	if !ok {
		return api.Operation{}, false
	}
	s, _, _ := op.snapshot()
	return s, true
}

// Wait long-polls operation id: it returns as soon as the op's version is
// newer than version, or at once if the op has finished (it will not change
// again). When ctx ends first it returns the current snapshot with ctx's
// error. An unknown id is a NotFound error.
func (t *Tracker) Wait(ctx context.Context, id string, version uint64) (api.Operation, uint64, error) {
	op, ok := t.get(id)
	if !ok {
		return api.Operation{}, 0, notFound(id)
	}
	for {
		s, v, ch := op.snapshot()
		if v > version || s.State != api.OpRunning {
			return s, v, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, v, ctx.Err()
		}
	}
}

// Output returns the output lines of operation id from absolute index from
// on, and the index to ask for next. Lines that fell out of the bounded ring
// are skipped. Unknown ids return (nil, from).
func (t *Tracker) Output(id string, from int) ([]string, int) {
	op, ok := t.get(id)
	if !ok {
		return nil, from
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	if from < op.first {
		from = op.first
	}
	end := op.first + len(op.lines)
	if from >= end {
		return nil, end
	}
	return append([]string(nil), op.lines[from-op.first:]...), end
}

// Cancel cancels operation id's context (set with Op.SetCancel). Cancelling
// a finished op is a no-op.
func (t *Tracker) Cancel(id string) error {
	op, ok := t.get(id)
	if !ok {
		return notFound(id)
	}
	op.mu.Lock()
	cancel := op.cancel
	op.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return nil
}

// List returns snapshots of all known operations.
func (t *Tracker) List() []api.Operation {
	t.mu.Lock()
	all := make([]*Op, 0, len(t.ops))
	for _, op := range t.ops {
		all = append(all, op)
	}
	t.mu.Unlock()
	out := make([]api.Operation, 0, len(all))
	for _, op := range all {
		s, _, _ := op.snapshot()
		out = append(out, s)
	}
	return out
}

// retire records id as finished, forgets the oldest finished ops beyond
// maxFinished and drops the oldest finished ops' output beyond
// maxFinishedBytes.
func (t *Tracker) retire(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished = append(t.finished, id)
	for len(t.finished) > t.maxFinished {
		delete(t.ops, t.finished[0])
		t.finished = t.finished[1:]
	}
	total := 0
	for i := len(t.finished) - 1; i >= 0; i-- {
		op := t.ops[t.finished[i]]
		op.mu.Lock()
		if total += op.bytes; total > t.maxFinishedBytes {
			op.dropLocked(len(op.lines))
		}
		op.mu.Unlock()
	}
}

// ID returns the operation's ID.
func (op *Op) ID() string {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.snap.ID
}

// Snapshot returns a copy of the operation as it is now.
func (op *Op) Snapshot() api.Operation {
	s, _, _ := op.snapshot()
	return s
}

func (op *Op) snapshot() (api.Operation, uint64, <-chan struct{}) {
	op.mu.Lock()
	defer op.mu.Unlock()
	s := op.snap
	s.Stages = append([]api.Stage{}, op.snap.Stages...)
	return s, op.version, op.changed
}

// SetCancel records the function Tracker.Cancel calls to cancel the work.
func (op *Op) SetCancel(cancel context.CancelFunc) {
	op.mu.Lock()
	op.cancel = cancel
	op.mu.Unlock()
}

// bumpLocked records a change and wakes the waiters.
func (op *Op) bumpLocked() {
	op.version++
	close(op.changed)
	op.changed = make(chan struct{})
}

// Stage starts a named stage; the returned function ends it (idempotent).
func (op *Op) Stage(name string) func(error) {
	op.mu.Lock()
	idx := len(op.snap.Stages)
	op.snap.Stages = append(op.snap.Stages, api.Stage{Name: name, Started: time.Now().UTC(), Outcome: api.StageRunning})
	op.running = append(op.running, idx)
	op.bumpLocked()
	op.mu.Unlock()
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			op.mu.Lock()
			defer op.mu.Unlock()
			op.endStageLocked(idx, err)
			op.bumpLocked()
		})
	}
}

func (op *Op) endStageLocked(idx int, err error) {
	st := &op.snap.Stages[idx]
	if st.Outcome != api.StageRunning {
		return
	}
	st.Duration = time.Since(st.Started)
	st.Outcome = api.StageOK
	if err != nil {
		st.Outcome = api.StageFailed
		if st.Detail != "" {
			st.Detail += ": "
		}
		st.Detail += err.Error()
	}
	for i, r := range op.running {
		if r == idx {
			op.running = append(op.running[:i], op.running[i+1:]...)
			break
		}
	}
}

// Detail attaches text to the most recently started running stage (or is
// dropped when no stage runs).
func (op *Op) Detail(text string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if len(op.running) == 0 {
		return
	}
	op.snap.Stages[op.running[len(op.running)-1]].Detail = text
	op.bumpLocked()
}

// Output appends one output line, cut to MaxLineBytes, dropping the oldest
// lines beyond the tracker's line and byte bounds.
func (op *Op) Output(line string) {
	line = cutLine(line)
	op.mu.Lock()
	defer op.mu.Unlock()
	op.lines = append(op.lines, line)
	op.bytes += len(line)
	drop := 0
	for n, b := len(op.lines), op.bytes; n-drop > op.t.maxLines || b > op.t.maxBytes; drop++ {
		b -= len(op.lines[drop])
	}
	op.dropLocked(drop)
	op.bumpLocked()
}

// dropLocked forgets the oldest n lines. Slicing keeps appends amortised:
// the dropped strings are released when append next moves the array.
func (op *Op) dropLocked(n int) {
	for _, l := range op.lines[:n] {
		op.bytes -= len(l)
	}
	clear(op.lines[:n])
	op.lines = op.lines[n:]
	op.first += n
}

// cutLine returns line cut to MaxLineBytes on a rune boundary, with a marker
// saying how many bytes were cut.
func cutLine(line string) string {
	if len(line) <= MaxLineBytes {
		return line
	}
	keep := MaxLineBytes - 64 // room for the marker
	for keep > 0 && !utf8.RuneStart(line[keep]) {
		keep--
	}
	return line[:keep] + fmt.Sprintf(" … [line truncated: %d bytes dropped]", len(line)-keep)
}

// Finish records the outcome exactly once: err == nil means success with
// result (marshalled to JSON); otherwise the op fails with api.AsError(err).
// Stages still running are closed with the same outcome.
func (op *Op) Finish(result any, err error) {
	var raw json.RawMessage
	if err == nil && result != nil {
		b, merr := json.Marshal(result)
		if merr != nil {
			err = api.Internal("encoding the result of %s: %w", op.Snapshot().Kind, merr)
		} else {
			raw = b
		}
	}
	op.mu.Lock()
	if op.snap.State != api.OpRunning {
		op.mu.Unlock()
		return
	}
	for len(op.running) > 0 {
		op.endStageLocked(op.running[0], err)
	}
	op.snap.Finished = time.Now().UTC()
	if err != nil {
		op.snap.State = api.OpFailed
		op.snap.Error = api.AsError(err)
	} else {
		op.snap.State = api.OpSucceeded
		op.snap.Result = raw
	}
	op.bumpLocked()
	id := op.snap.ID
	op.mu.Unlock()
	op.t.retire(id)
}
