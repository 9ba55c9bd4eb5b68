package debian

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
	"internal/image/debian/debian.go", "internal/image/debian/bake.go", "internal/image/debian/rootfs.go",
	"internal/image/debian/chroot.go", "internal/image/debian/preflight.go", "internal/image/debian/recipe.go",
	"internal/image/debian/npm.go", // --with opencode's npm install, sandboxed
	"internal/sandbox/sandbox.go",  // what the sandboxed npm sees
	"internal/sandbox/tree.go",     // how its output goes into the image
	"internal/ext4/ext4.go",        // mkfs.ext4's options
	"internal/feature/opencode.sh", // --with opencode
}

// builderSourcesSum is the sha256 of builderSources when builderVersion
// was last decided on.
const builderSourcesSum = "9d6d90130ed755dbc94accb9608cf0879952c9e98c035959fd9c890a88eaad17"

// TestBuilderSourcesPinned makes a change to the image builder a decision:
// a change to what goes into an image bumps builderVersion (cached test
// images rebuild), a refactor refreshes builderSourcesSum only.
func TestBuilderSourcesPinned(t *testing.T) {
	h := sha256.New()
	for _, p := range builderSources {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", p))
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
