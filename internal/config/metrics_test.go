package config

import (
	"testing"
)

// metrics_listen is validated like web_listen: loopback (or off) is fine, a
// non-loopback address needs metrics_allow_remote, and the error names the
// key and both ways out.
func TestMetricsListen(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error; nil = valid
	}{
		{"off by default", "", nil},
		{"loopback", "metrics_listen = \"127.0.0.1:9470\"\n", nil},
		{"localhost", "metrics_listen = \"localhost:9470\"\n", nil},
		{"ipv6 loopback", "metrics_listen = \"[::1]:9470\"\n", nil},
		{"remote opted in", "metrics_listen = \"0.0.0.0:9470\"\nmetrics_allow_remote = true\n", nil},
		{"remote refused", "metrics_listen = \"0.0.0.0:9470\"\n",
			[]string{"line 1: metrics_listen:", `"0.0.0.0:9470" is not a loopback address`, "127.0.0.1:9470", "metrics_allow_remote = true", "fix: edit /x.toml"}},
		{"empty host is every address", "metrics_listen = \":9470\"\n", []string{"metrics_listen:", "metrics_allow_remote = true"}},
		{"web opt-in is not metrics opt-in", "metrics_listen = \"0.0.0.0:9470\"\nweb_allow_remote = true\n", []string{"metrics_listen:"}},
		{"not host:port", "metrics_listen = \"9470\"\n", []string{"metrics_listen:", "not host:port"}},
		{"wrong type", "metrics_allow_remote = \"yes\"\n", []string{"metrics_allow_remote:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc), "/x.toml")
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tt.doc, err)
				}
				if tt.doc == "" && (c.MetricsListen != "" || c.MetricsAllowRemote) {
					t.Fatalf("metrics listener on by default: %q %v", c.MetricsListen, c.MetricsAllowRemote)
				}
				return
			}
			wantInvalid(t, tt.doc, err, tt.want)
		})
	}
}
