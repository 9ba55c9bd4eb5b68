package api

import "testing"

func TestSameMajor(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1.1", true},
		{"1.0", "1.1", true},
		{APIVersion, "1", true},
		{"2", "1.1", false},
		{"2.1", "1.1", false},
		{"", "1", false},
		{"11", "1.1", false},
	}
	for _, tt := range tests {
		if got := SameMajor(tt.a, tt.b); got != tt.want {
			t.Errorf("SameMajor(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
