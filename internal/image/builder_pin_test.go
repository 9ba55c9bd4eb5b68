package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// builderSources decide what image create puts into an image (paths from
// the repository root).
var builderSources = []string{
	"internal/image/debian.go", "internal/image/bake.go", "internal/image/rootfs.go", "internal/image/run.go",
}

// builderSourcesSum is the sha256 of builderSources when builderVersion
// was last decided on.
const builderSourcesSum = "815b1e606cf94a1ebd72e5e5a3b7386bd6b32c1b173cb28c79308684c92d940b"

// TestBuilderSourcesPinned makes a change to the image builder a decision:
// a change to what goes into an image bumps builderVersion (cached test
// images rebuild), a refactor refreshes builderSourcesSum only.
func TestBuilderSourcesPinned(t *testing.T) {
	h := sha256.New()
	for _, p := range builderSources {
		b, err := os.ReadFile(filepath.Join("..", "..", p))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != builderSourcesSum {
		t.Errorf("the image builder's sources changed (sha256 %s, pinned %s).\n"+
			"If what goes into an image changed, bump builderVersion (cached test images rebuild);\n"+
			"if it is a refactor that leaves images as they were, set builderSourcesSum to the new sum.",
			got, builderSourcesSum)
	}
}
