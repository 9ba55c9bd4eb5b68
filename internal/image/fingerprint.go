package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"banger/internal/api"
)

func Sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	c := slices.Clone(s)
	sort.Strings(c)
	return slices.Compact(c)
}

// FileSHA256 returns the hex sha256 of a file's bytes.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ArtefactFingerprint hashes a recipe (or source description) and the bytes
// of every artefact present in dir, streaming.
func ArtefactFingerprint(recipe string, dir string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\n", recipe)
	for _, name := range []string{KernelFile, InitrdFile, RootfsFile, WorkSeedFile} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := hashInto(h, p); err != nil {
			return "", fmt.Errorf("hashing %s: %w", name, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Describe fills the artefact paths (under final) and sizes (measured in
// dir) of an image directory.
func Describe(final, dir string) api.Image {
	img := api.Image{Dir: final}
	set := func(name string, path *string, size *int64) {
		if n := FileSize(filepath.Join(dir, name)); n > 0 {
			*path, *size = filepath.Join(final, name), n
		}
	}
	set(KernelFile, &img.Kernel, &img.KernelSize)
	set(VmlinuxFile, &img.Vmlinux, &img.VmlinuxSize)
	set(InitrdFile, &img.Initrd, &img.InitrdSize)
	set(RootfsFile, &img.Rootfs, &img.RootfsSize)
	set(WorkSeedFile, &img.WorkSeed, &img.WorkSeedSize)
	return img
}

// Finish fingerprints the artefacts in staging and moves them to
// imagesDir/<name>, returning the image's metadata for the Service to
// store. img carries the name, parent, source, recipe, kernel version,
// engines, features and creation time; paths and sizes are filled here.
func Finish(imagesDir, staging string, img api.Image) (api.Image, error) {
	fp, err := ArtefactFingerprint(img.Recipe, staging)
	if err != nil {
		return api.Image{}, err
	}
	final := filepath.Join(imagesDir, img.Name)
	d := Describe(final, staging)
	d.Name, d.Fingerprint, d.Parent, d.Source, d.Recipe = img.Name, fp, img.Parent, img.Source, img.Recipe
	d.KernelVersion, d.Engines, d.Features, d.Managed = img.KernelVersion, img.Engines, img.Features, true
	d.CreatedAt = img.CreatedAt
	if _, err := os.Stat(final); err == nil {
		return api.Image{}, api.AlreadyExists("image directory %s already exists", final).
			WithFix("pick another name, or delete the image first").WithAction("image delete", img.Name)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return api.Image{}, err
	}
	if err := os.Rename(staging, final); err != nil {
		return api.Image{}, fmt.Errorf("moving the image into place: %w", err)
	}
	return d, nil
}
