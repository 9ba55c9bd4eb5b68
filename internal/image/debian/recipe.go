package debian

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/image"
	"fmt"
)

// RecipeVersion is the first part of BuilderVersion.
const RecipeVersion = "1"

// builderVersion identifies what image create puts into an image; it is
// part of every image's recipe, so the test images cached under a recipe
// fingerprint are rebuilt when it changes. It used to be a hash of the
// builder's source, computed at run time, which rebuilt every cached image
// on any edit of that source, even a pure code move. Now it is pinned, and
// TestBuilderSourcesPinned fails when the sources that decide an image's
// content change: bump this (any new value, e.g. "2-<date>") when the image
// content changes, or refresh only the test's pin for a refactor.
const builderVersion = RecipeVersion + "-20261129-sandboxed-npm-opencode-auth"

// BuilderVersion identifies the build recipe (see builderVersion).
func BuilderVersion() string { return builderVersion }

// Recipe is everything that went into an image from nothing. It is stored
// as JSON in api.Image.Recipe.
type Recipe struct {
	Builder  string   `json:"builder"`
	Suite    string   `json:"suite"`
	Mirror   string   `json:"mirror"`
	Kernel   string   `json:"kernel_package"`
	Base     []string `json:"base_packages"`
	Packages []string `json:"packages,omitempty"`
	With     []string `json:"with,omitempty"`
	Agent    string   `json:"agent_sha256"`
	SSHKey   string   `json:"ssh_key_sha256"`
}

// NewRecipe describes building req (defaults filled) with the given agent
// binary and authorized key.
func NewRecipe(req api.ImageCreateRequest, agentBin, sshPubKey string) (Recipe, error) {
	agentSum, err := image.FileSHA256(agentBin)
	if err != nil {
		return Recipe{}, fmt.Errorf("hashing the agent binary: %w", err)
	}
	keySum := sha256.Sum256([]byte(sshPubKey))
	r := Recipe{
		Builder: BuilderVersion(), Suite: req.Suite, Mirror: req.Mirror, Kernel: KernelPackage,
		Base: BasePackages, Packages: image.Sorted(req.Packages), With: image.Sorted(req.With),
		Agent: agentSum, SSHKey: hex.EncodeToString(keySum[:]),
	}
	return r, nil
}

// JSON returns the recipe's canonical JSON.
func (r Recipe) JSON() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// Fingerprint is the sha256 of the recipe alone: equal recipes give equal
// fingerprints without building anything.
func (r Recipe) Fingerprint() string {
	s := sha256.Sum256([]byte(r.JSON()))
	return hex.EncodeToString(s[:])
}

// metadata fingerprints the finished artefacts and describes the image as
// it will be once renamed into ImagesDir.
func (bd *makeRun) metadata() (api.Image, error) {
	if bd.kver == "" {
		return api.Image{}, errNoKernel
	}
	recipe, err := NewRecipe(bd.req, bd.AgentBin, bd.SSHPubKey)
	if err != nil {
		return api.Image{}, err
	}
	fp, err := image.ArtefactFingerprint(recipe.JSON(), bd.staging)
	if err != nil {
		return api.Image{}, err
	}
	features := []string{feature.Agent}
	for _, d := range feature.Default.Of(bd.req.With) {
		features = append(features, d.Name)
	}
	img := image.Describe(filepath.Join(bd.ImagesDir, bd.req.Name), bd.staging)
	img.Name = bd.req.Name
	img.Fingerprint = fp
	img.Source = "debian:" + bd.req.Suite
	img.KernelVersion = bd.kver
	img.Managed = true
	img.Features = features
	img.Recipe = recipe.JSON()
	img.CreatedAt = time.Now().UTC()
	img.Engines = []string{"qemu"}
	if img.Vmlinux != "" && bd.mmio {
		img.Engines = []string{"qemu", "firecracker"}
	}
	bd.rep.Detail(fp[:16])
	return img, nil
}
