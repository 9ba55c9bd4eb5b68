package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, and
// whatever it accepts must validate.
func FuzzParse(f *testing.F) {
	f.Add([]byte("vcpus = 2\nmemory = \"1GiB\"\n"))
	f.Add([]byte("[web]\nlisten = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config fuzz.toml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
	})
}
