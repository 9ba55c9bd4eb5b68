// Package names generates and validates the names of VMs and images:
// friendly adjective-noun names such as "brave-otter", and the DNS label
// rules every name must follow (a VM's name becomes its DNS name <vm>.vm).
package names

import (
	"fmt"
	"math/rand/v2"

	"banger/internal/api"
)

// MaxLen is the longest name Validate accepts. It keeps <name>.vm and the
// per-VM device and file names derived from a name comfortably short.
const MaxLen = 40

// uniqueTries is how many plain adjective-noun names GenerateUnique tries
// before it adds a numeric suffix.
const uniqueTries = 8

var adjectives = []string{
	"able", "agile", "amber", "ample", "azure", "bold", "brave", "brisk", "bright", "calm",
	"candid", "clever", "cosmic", "crisp", "curious", "daring", "deft", "eager", "early", "easy",
	"fancy", "fast", "fierce", "fond", "frank", "fresh", "gentle", "giddy", "glad", "golden",
	"grand", "happy", "hardy", "honest", "humble", "jolly", "keen", "kind", "lively", "lucky",
	"merry", "mighty", "misty", "modest", "neat", "nimble", "noble", "odd", "plucky", "polite",
	"proud", "quick", "quiet", "rapid", "ready", "rosy", "rustic", "shiny", "silent", "sleek",
	"smart", "snappy", "solid", "sunny", "swift", "tidy", "trusty", "vivid", "warm", "witty",
	"zesty",
}

var nouns = []string{
	"badger", "beaver", "bison", "cedar", "comet", "condor", "coral", "cougar", "crane", "dingo",
	"dolphin", "eagle", "falcon", "ferret", "finch", "fjord", "fox", "gecko", "glacier", "heron",
	"hornet", "ibis", "jackal", "jaguar", "kestrel", "koala", "lark", "lemur", "lynx", "maple",
	"marmot", "meadow", "mole", "moose", "newt", "ocelot", "orca", "osprey", "otter", "owl",
	"panda", "pebble", "pelican", "pine", "puffin", "quail", "raven", "reef", "robin", "salmon",
	"seal", "sparrow", "spruce", "squid", "stork", "swan", "tapir", "tern", "tiger", "trout",
	"tundra", "viper", "walrus", "willow", "wombat", "wren", "yak", "zebra",
}

// Generate returns a random adjective-noun name such as "brave-otter". It
// always passes Validate.
func Generate() string {
	return adjectives[rand.IntN(len(adjectives))] + "-" + nouns[rand.IntN(len(nouns))]
}

// GenerateUnique returns a generated name for which taken reports false. It
// tries a few plain names first, then adds a numeric suffix ("brave-otter-2")
// until a free one is found.
func GenerateUnique(taken func(string) bool) string {
	var name string
	for range uniqueTries {
		name = Generate()
		if !taken(name) {
			return name
		}
	}
	for i := 2; ; i++ {
		candidate := fmt.Sprintf("%s-%d", name, i)
		if !taken(candidate) {
			return candidate
		}
	}
}

// Validate checks name against the DNS label rules banger uses for VM and
// image names: 1 to MaxLen characters of a-z, 0-9 and '-', starting with a
// letter and not ending with '-'. The error is api.Invalid and names the
// broken rule and the fix.
func Validate(name string) error {
	const fix = "use lowercase letters, digits and '-', start with a letter, e.g. \"brave-otter\""
	switch {
	case name == "":
		return api.Invalid("name is empty").WithFix(fix)
	case len(name) > MaxLen:
		return api.Invalid("name %q is %d characters long; the limit is %d", name, len(name), MaxLen).
			WithFix(fmt.Sprintf("use a name of at most %d characters", MaxLen))
	case name[0] < 'a' || name[0] > 'z':
		return api.Invalid("name %q must start with a lowercase letter", name).WithFix(fix)
	case name[len(name)-1] == '-':
		return api.Invalid("name %q must not end with '-'", name).WithFix(fix)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' {
			continue
		}
		return api.Invalid("name %q has %q at position %d; only a-z, 0-9 and '-' are allowed", name, rune(c), i+1).
			WithFix(fix)
	}
	return nil
}
