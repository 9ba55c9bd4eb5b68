package api

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestActionCommandLine(t *testing.T) {
	for _, tt := range []struct {
		a    Action
		want string
	}{
		{Action{Verb: "vm start", Args: []string{"dev"}}, "banger vm start dev"},
		{Action{Verb: "vm list"}, "banger vm list"},
		{Action{Verb: "image delete", Args: []string{"--force", "my image", "it's"}}, `banger image delete --force 'my image' 'it'\''s'`},
	} {
		if got := tt.a.CommandLine(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.a, got, tt.want)
		}
	}
}

// The action crosses the wire beside the words, survives AsError through a
// wrap, and the message keeps no copy of the fix.
func TestErrorActionOnTheWire(t *testing.T) {
	err := fmt.Errorf("starting vm dev: %w", FailedPrecondition("vm %q is stopped", "dev").
		WithFix("start it first").WithAction("vm start", "dev"))
	if got, want := err.Error(), `starting vm dev: vm "dev" is stopped (fix: start it first: banger vm start dev)`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	b, _ := json.Marshal(AsError(err))
	want := `{"kind":"FailedPrecondition","message":"starting vm dev: vm \"dev\" is stopped","fix":"start it first","action":{"verb":"vm start","args":["dev"]}}`
	if string(b) != want {
		t.Fatalf("JSON = %s\nwant   %s", b, want)
	}
	var back Error
	if err := json.Unmarshal(b, &back); err != nil || back.FixLine() != "start it first: banger vm start dev" {
		t.Fatalf("decoded %+v %v", back, err)
	}
	// An old daemon's error (no action) reads as before.
	var old Error
	_ = json.Unmarshal([]byte(`{"kind":"NotFound","message":"m","fix":"banger vm list"}`), &old)
	if old.Action != nil || old.FixLine() != "banger vm list" {
		t.Fatalf("old error = %+v", old)
	}
}
