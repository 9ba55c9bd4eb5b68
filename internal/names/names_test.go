package names

import (
	"strings"
	"testing"

	"banger/internal/api"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring of the error, "" = valid
	}{
		{"brave-otter", ""},
		{"a", ""},
		{"vm1", ""},
		{"a-b-c-9", ""},
		{strings.Repeat("a", MaxLen), ""},
		{"", "empty"},
		{strings.Repeat("a", MaxLen+1), "the limit is 40"},
		{"1vm", "must start with a lowercase letter"},
		{"-vm", "must start with a lowercase letter"},
		{"Brave", "must start with a lowercase letter"},
		{"vm-", "must not end with '-'"},
		{"brave_otter", `'_' at position 6`},
		{"brave.otter", `'.' at position 6`},
		{"bRave", `'R' at position 2`},
		{"brave otter", `' ' at position 6`},
		{"café", "only a-z, 0-9 and '-'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want error containing %q", tt.name, tt.wantErr)
			}
			if !api.IsInvalid(err) {
				t.Errorf("Validate(%q) kind = %s, want Invalid", tt.name, api.KindOf(err))
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate(%q) = %q, want it to contain %q", tt.name, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "fix:") {
				t.Errorf("Validate(%q) = %q, want a fix", tt.name, err)
			}
		})
	}
}

func TestWordListsAreValidAndLargeEnough(t *testing.T) {
	for _, list := range []struct {
		name  string
		words []string
	}{{"adjectives", adjectives}, {"nouns", nouns}} {
		if len(list.words) < 60 {
			t.Errorf("%s has %d words, want at least 60", list.name, len(list.words))
		}
		seen := map[string]bool{}
		for _, w := range list.words {
			if seen[w] {
				t.Errorf("%s: duplicate %q", list.name, w)
			}
			seen[w] = true
			if err := Validate(w); err != nil {
				t.Errorf("%s: %v", list.name, err)
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		n := Generate()
		if err := Validate(n); err != nil {
			t.Fatalf("Generate() = %q: %v", n, err)
		}
		if strings.Count(n, "-") != 1 {
			t.Fatalf("Generate() = %q, want adjective-noun", n)
		}
		seen[n] = true
	}
	if len(seen) < 300 {
		t.Errorf("500 names gave only %d distinct ones; the generator is not random enough", len(seen))
	}
}

func TestGenerateUnique(t *testing.T) {
	tests := []struct {
		name       string
		taken      func(string) bool
		wantSuffix bool
	}{
		{"nothing taken", func(string) bool { return false }, false},
		{"every plain name taken", func(s string) bool { return strings.Count(s, "-") == 1 }, true},
		{"plain and -2 taken", func(s string) bool { return !strings.HasSuffix(s, "-3") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := GenerateUnique(tt.taken)
			if tt.taken(n) {
				t.Fatalf("GenerateUnique returned taken name %q", n)
			}
			if err := Validate(n); err != nil {
				t.Fatalf("GenerateUnique() = %q: %v", n, err)
			}
			if got := strings.Count(n, "-") == 2; got != tt.wantSuffix {
				t.Errorf("GenerateUnique() = %q, suffix = %v, want %v", n, got, tt.wantSuffix)
			}
		})
	}
}
