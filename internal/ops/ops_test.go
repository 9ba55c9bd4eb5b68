package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"banger/internal/api"
)

func TestStagesAndFinish(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantState api.OpState
		wantKind  api.Kind
	}{
		{"success", nil, api.OpSucceeded, ""},
		{"not found", api.NotFound("image %q not found", "x"), api.OpFailed, api.KindNotFound},
		{"plain error", errors.New("boom"), api.OpFailed, api.KindInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(0)
			op := tr.Begin("vm.create", "a")
			done := op.Stage("allocate")
			op.Detail("tap-3")
			done(nil)
			done(errors.New("ignored: second call")) // idempotent
			bootDone := op.Stage("boot")
			_ = bootDone
			op.Finish(map[string]string{"name": "a"}, tt.err)
			op.Finish(nil, errors.New("ignored: second finish"))

			got, ok := tr.Get(op.ID())
			if !ok {
				t.Fatal("op not found")
			}
			if got.State != tt.wantState {
				t.Fatalf("state = %s, want %s", got.State, tt.wantState)
			}
			if len(got.Stages) != 2 || got.Stages[0].Outcome != api.StageOK || got.Stages[0].Detail != "tap-3" {
				t.Fatalf("stages = %+v", got.Stages)
			}
			if got.Stages[1].Outcome == api.StageRunning {
				t.Fatalf("running stage left open after Finish: %+v", got.Stages[1])
			}
			if tt.err == nil {
				if string(got.Result) != `{"name":"a"}` || got.Error != nil {
					t.Fatalf("result = %s, error = %v", got.Result, got.Error)
				}
				return
			}
			if got.Error == nil || got.Error.Kind != tt.wantKind {
				t.Fatalf("error = %+v, want kind %s", got.Error, tt.wantKind)
			}
		})
	}
}

func TestConcurrentStages(t *testing.T) {
	tr := NewTracker(0)
	op := tr.Begin("image.create", "img")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := op.Stage(fmt.Sprintf("s%d", i))
			op.Detail("d")
			op.Output(fmt.Sprintf("line %d", i))
			var err error
			if i%2 == 1 {
				err = errors.New("odd")
			}
			done(err)
		}()
	}
	wg.Wait()
	op.Finish(nil, nil)
	s := op.Snapshot()
	if len(s.Stages) != 50 {
		t.Fatalf("got %d stages, want 50", len(s.Stages))
	}
	failed := 0
	for _, st := range s.Stages {
		switch st.Outcome {
		case api.StageFailed:
			failed++
		case api.StageOK:
		default:
			t.Fatalf("stage %s outcome %s", st.Name, st.Outcome)
		}
	}
	if failed != 25 {
		t.Fatalf("failed stages = %d, want 25", failed)
	}
	lines, next := tr.Output(op.ID(), 0)
	if len(lines) != 50 || next != 50 {
		t.Fatalf("output = %d lines, next %d", len(lines), next)
	}
}

func TestWaitWakesOnChange(t *testing.T) {
	tr := NewTracker(0)
	op := tr.Begin("vm.start", "a")
	_, v, err := tr.Wait(context.Background(), op.ID(), 0)
	if err != nil || v == 0 {
		t.Fatalf("first wait: v=%d err=%v", v, err)
	}

	got := make(chan api.Operation, 1)
	go func() {
		s, _, err := tr.Wait(context.Background(), op.ID(), v)
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	select {
	case <-got:
		t.Fatal("Wait returned before any change")
	case <-time.After(50 * time.Millisecond):
	}
	op.Stage("boot")
	select {
	case s := <-got:
		if len(s.Stages) != 1 || s.Stages[0].Name != "boot" {
			t.Fatalf("woke with %+v", s.Stages)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiter did not wake on change")
	}

	// A timeout returns the current state with the context's error.
	_, v2, _ := tr.Wait(context.Background(), op.ID(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, v3, err := tr.Wait(ctx, op.ID(), v2); !errors.Is(err, context.DeadlineExceeded) || v3 != v2 {
		t.Fatalf("timeout wait: v=%d err=%v", v3, err)
	}

	// A finished op never blocks.
	op.Finish(nil, nil)
	_, v4, _ := tr.Wait(context.Background(), op.ID(), 0)
	if s, _, err := tr.Wait(context.Background(), op.ID(), v4+100); err != nil || s.State != api.OpSucceeded {
		t.Fatalf("wait on finished op: %v %s", err, s.State)
	}

	if _, _, err := tr.Wait(context.Background(), "nope", 0); !api.IsNotFound(err) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestBoundedHistory(t *testing.T) {
	tr := NewTracker(3)
	var ids []string
	for i := range 5 {
		op := tr.Begin("vm.stop", fmt.Sprint(i))
		op.Finish(nil, nil)
		ids = append(ids, op.ID())
	}
	running := tr.Begin("vm.start", "r")
	for i, id := range ids {
		_, ok := tr.Get(id)
		if want := i >= 2; ok != want {
			t.Errorf("op %d kept = %v, want %v", i, ok, want)
		}
	}
	if _, ok := tr.Get(running.ID()); !ok {
		t.Error("running op was evicted")
	}
}

func TestOutputRing(t *testing.T) {
	tr := NewTracker(0)
	tr.maxLines = 3
	op := tr.Begin("image.create", "i")
	for i := range 5 {
		op.Output(fmt.Sprint(i))
	}
	lines, next := tr.Output(op.ID(), 0)
	if fmt.Sprint(lines) != "[2 3 4]" || next != 5 {
		t.Fatalf("lines = %v next = %d", lines, next)
	}
	lines, next = tr.Output(op.ID(), 4)
	if fmt.Sprint(lines) != "[4]" || next != 5 {
		t.Fatalf("from 4: lines = %v next = %d", lines, next)
	}
	if lines, next = tr.Output(op.ID(), 5); lines != nil || next != 5 {
		t.Fatalf("from end: lines = %v next = %d", lines, next)
	}
}

func TestCancel(t *testing.T) {
	tr := NewTracker(0)
	op := tr.Begin("vm.create", "a")
	ctx, cancel := context.WithCancel(context.Background())
	op.SetCancel(cancel)
	if err := tr.Cancel(op.ID()); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Fatal("context not cancelled")
	}
	if err := tr.Cancel("nope"); !api.IsNotFound(err) {
		t.Fatalf("unknown id: %v", err)
	}
}

// TestFinishedOutputBudget: finished operations keep at most
// maxFinishedBytes of output together; the oldest lose theirs first.
func TestFinishedOutputBudget(t *testing.T) {
	tr := NewTracker(0)
	tr.maxFinishedBytes = 3000
	var ids []string
	for i := 0; i < 5; i++ {
		op := tr.Begin("image.build", fmt.Sprint(i))
		op.Output(strings.Repeat("x", 1000))
		op.Finish(nil, nil)
		ids = append(ids, op.ID())
	}
	for i, id := range ids {
		lines, next := tr.Output(id, 0)
		if want := i >= 2; (len(lines) == 1) != want || next != 1 {
			t.Errorf("op %d: %d lines (next %d), want kept=%v", i, len(lines), next, want)
		}
	}
}

func TestCutLineKeepsRunes(t *testing.T) {
	line := strings.Repeat("é", MaxLineBytes)
	got := cutLine(line)
	if len(got) > MaxLineBytes || !utf8.ValidString(got) || !strings.Contains(got, "truncated") {
		t.Fatalf("cut line: %d bytes, valid %v: %q", len(got), utf8.ValidString(got), got[len(got)-60:])
	}
}
