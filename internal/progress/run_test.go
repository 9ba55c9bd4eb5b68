package progress_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"banger/internal/progress"
)

func TestRunAndLogged(t *testing.T) {
	var buf bytes.Buffer
	rec := &progress.Recorder{}
	rep := progress.Logged(rec, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("image", "x"))
	if err := progress.Run(rep, "copy", func() error { rep.Detail("3 files"); rep.Output("line"); return nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := progress.Run(rep, "script", func() error { return boom })
	if !errors.Is(err, boom) || err.Error() != "script stage: boom" {
		t.Errorf("err = %v, want %q wrapping boom", err, "script stage: boom")
	}
	if got := rec.Names(); len(got) != 2 || got[0] != "copy" || got[1] != "script" ||
		rec.Stages[0].Detail != "3 files" || rec.Stages[1].Err != boom || len(rec.Lines) != 1 {
		t.Errorf("recorded %+v lines %v", rec.Stages, rec.Lines)
	}
	log := buf.String()
	for _, want := range []string{`msg="stage started" image=x stage=copy`, `msg="stage finished" image=x stage=copy`,
		`detail="3 files"`, `stage=script`, `err=boom`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
