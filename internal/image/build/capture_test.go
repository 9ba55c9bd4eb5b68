package build

import "testing"

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		less bool
	}{
		{"6.1.0-28-cloud-amd64", "6.1.0-30-cloud-amd64", true},
		{"6.1.0-9-cloud-amd64", "6.1.0-28-cloud-amd64", true},
		{"6.12.1-cloud-amd64", "6.2.0-cloud-amd64", false},
		{"6.1.0-28-cloud-amd64", "6.1.0-28-cloud-amd64", false},
	}
	for _, c := range cases {
		if got := compareVersions(c.a, c.b) < 0; got != c.less {
			t.Errorf("compareVersions(%q, %q) < 0 = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}
