package main

import (
	"bytes"
	"testing"

	"banger/internal/api"
)

func TestImageTree(t *testing.T) {
	imgs := []api.Image{
		{Name: "base", Source: "debian:bookworm"},
		{Name: "child", Parent: "base", Source: "build"},
		{Name: "grand", Parent: "child", Source: "promote"},
		{Name: "other", Parent: "base", Source: "build"},
		{Name: "orphan", Parent: "gone", Source: "build"},
	}
	var b bytes.Buffer
	imageTree(&b, imgs)
	want := `base  (debian:bookworm)
├─ child  (build)
│  └─ grand  (promote)
└─ other  (build)
orphan  (build, parent gone deleted)
`
	if b.String() != want {
		t.Errorf("tree:\n%s\nwant:\n%s", b.String(), want)
	}
}
