package metrics

import "testing"

func TestStageLabelDropsChildNames(t *testing.T) {
	for in, want := range map[string]string{"restore": "restore", "kid-1: restore": "restore", "a: b: agent ready": "agent ready"} {
		if got := stageLabel(in); got != want {
			t.Errorf("stageLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
