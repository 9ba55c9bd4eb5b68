package store

import (
	"context"
	"testing"
)

func TestPatchesRecordedOnce(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for _, step := range []struct {
		do   func() error
		want bool
	}{
		{func() error { return nil }, false},
		{func() error { return s.RecordPatch(ctx, "p") }, true},
		{func() error { return s.RecordPatch(ctx, "p") }, true},
		{func() error { return s.ForgetPatch(ctx, "p") }, false},
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		if got, err := s.PatchApplied(ctx, "p"); err != nil || got != step.want {
			t.Fatalf("PatchApplied = %v, %v; want %v", got, err, step.want)
		}
	}
}
