package config

import (
	"encoding"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"banger/internal/api"
)

// Load reads the config file named by flag (the raw --config value, "" when
// not given), else by $BANGER_CONFIG, else DefaultPath. When nothing was named
// and DefaultPath does not exist, Load returns Default(); a named file that
// does not exist is an Invalid error, and so is any file that cannot be read.
func Load(flag string) (Config, error) {
	return load(flag, os.Getenv(EnvVar), DefaultPath)
}

func load(flag, env, def string) (Config, error) {
	p, named := resolvePath(flag, env, def)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if !named {
			return Default(), nil
		}
		return Config{}, api.Invalid("config file %s does not exist", p).
			WithFix(fmt.Sprintf("create it (config.sample.toml documents every key), or unset --config/$%s to use %s or the defaults", EnvVar, DefaultPath))
	}
	if err != nil {
		return Config{}, api.Invalid("reading config %s: %v", p, err).
			WithFix(fmt.Sprintf("make %s a readable file (or remove it to use the defaults), or name another with --config/$%s", p, EnvVar))
	}
	return Parse(data, p)
}

// Parse decodes a config document over Default() and validates it. name is
// the file name used in errors and stored in Path. Unknown keys, values of
// the wrong type and values out of range are Invalid errors naming the key
// and its line.
func Parse(data []byte, name string) (Config, error) {
	c := Default()
	c.Path = name
	var raw map[string]toml.Primitive
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, invalid(name, pe.Position.Line, pe.Message)
		}
		return Config{}, invalid(name, 0, err.Error())
	}
	// Top-level keys in document order; a key's line is looked up only
	// when there is something to say about it.
	var keys []string
	seen := make(map[string]bool, len(raw))
	for _, k := range md.Keys() {
		if _, ok := raw[k[0]]; ok && len(k) == 1 {
			keys = append(keys, k[0])
			seen[k[0]] = true
		}
	}
	var implicit []string // implicit tables ("a.b = 1") are not in Keys as "a"
	for k := range raw {
		if !seen[k] {
			implicit = append(implicit, k)
		}
	}
	slices.Sort(implicit)
	keys = append(keys, implicit...)
	lineOf := func(k string) int {
		if prim, ok := raw[k]; ok {
			return keyLine(md, prim, data, k)
		}
		return 0
	}

	fields := fieldIndex()
	var probs []string
	rv := reflect.ValueOf(&c).Elem()
	for _, k := range keys {
		if len(probs) >= maxProblems {
			break
		}
		idx, ok := fields[k]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", k)
			if s := suggest(k); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			probs = append(probs, where(name, lineOf(k))+msg)
			continue
		}
		var v any
		if err := md.PrimitiveDecode(raw[k], &v); err != nil {
			probs = append(probs, where(name, lineOf(k))+k+": "+err.Error())
			continue
		}
		if err := assign(rv.Field(idx), v); err != nil {
			probs = append(probs, where(name, lineOf(k))+k+": "+err.Error())
		}
	}
	if len(probs) == 0 {
		for _, p := range c.problems() {
			probs = append(probs, where(name, lineOf(p.key))+p.key+": "+p.msg)
		}
	}
	if len(probs) > 0 {
		return Config{}, api.Invalid("%s", strings.Join(probs, "; ")).WithFix(fixFor(name))
	}
	return c, nil
}

// maxProblems caps how many problems one error lists.
const maxProblems = 10

// Validate checks every value's range and the rules between keys.
func (c Config) Validate() error {
	probs := c.problems()
	if len(probs) == 0 {
		return nil
	}
	msgs := make([]string, len(probs))
	for i, p := range probs {
		msgs[i] = p.key + ": " + p.msg
	}
	return api.Invalid("config %s: %s", c.Path, strings.Join(msgs, "; ")).WithFix(fixFor(c.Path))
}

func fixFor(name string) string {
	if name == "" {
		return "correct the value; config.sample.toml documents every key and its default"
	}
	return fmt.Sprintf("edit %s; config.sample.toml documents every key and its default", name)
}

func invalid(name string, line int, msg string) error {
	return api.Invalid("%s%s", where(name, line), msg).WithFix(fixFor(name))
}

// where is the "config NAME line N: " prefix of a message.
func where(name string, line int) string {
	s := "config"
	if name != "" {
		s += " " + name
	}
	if line > 0 {
		s += fmt.Sprintf(" line %d", line)
	}
	return s + ": "
}

// lineProbe makes the TOML decoder report the position of a key: decoding
// any value into it fails, and the decoder's error carries the key's line.
type lineProbe struct{}

var errProbe = errors.New("probe")

func (lineProbe) UnmarshalTOML(any) error { return errProbe }

func keyLine(md toml.MetaData, prim toml.Primitive, data []byte, key string) int {
	var pe toml.ParseError
	if err := md.PrimitiveDecode(prim, &lineProbe{}); errors.As(err, &pe) && pe.Position.Line > 0 {
		return pe.Position.Line
	}
	// Tables made implicitly ("a.b = 1", "[a.b]") have no position of their
	// own: find the first line that starts with the key.
	q := regexp.QuoteMeta(key)
	re := regexp.MustCompile(`^\s*(\[+\s*)?("` + q + `"|'` + q + `'|` + q + `)\s*[.=\]]`)
	for i, l := range strings.Split(string(data), "\n") {
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

// fieldIndex maps each toml key of Config to its field index.
func fieldIndex() map[string]int {
	t := reflect.TypeOf(Config{})
	out := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("toml")
		if tag != "" && tag != "-" {
			out[tag] = i
		}
	}
	return out
}

// Keys returns every config key in struct order.
func Keys() []string {
	t := reflect.TypeOf(Config{})
	var out []string
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// assign stores a decoded TOML value in field f, checking its type.
func assign(f reflect.Value, v any) error {
	if f.Addr().Type().Implements(textUnmarshaler) {
		switch x := v.(type) {
		case string:
			return f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(x))
		case int64:
			if f.Type() == reflect.TypeFor[Size]() {
				f.SetInt(x)
				return nil
			}
		}
		return typeErr(f.Type(), v)
	}
	switch f.Kind() {
	case reflect.String:
		if s, ok := v.(string); ok {
			f.SetString(s)
			return nil
		}
	case reflect.Int:
		if n, ok := v.(int64); ok {
			if n < math.MinInt32 || n > math.MaxInt32 {
				return fmt.Errorf("%d is out of range", n)
			}
			f.SetInt(n)
			return nil
		}
	case reflect.Bool:
		if b, ok := v.(bool); ok {
			f.SetBool(b)
			return nil
		}
	case reflect.Slice:
		if f.Type().Elem().Kind() == reflect.String {
			return setStrings(f, v)
		}
	}
	return typeErr(f.Type(), v)
}

// setStrings sets a []string field from a TOML array of strings.
func setStrings(f reflect.Value, v any) error {
	arr, ok := v.([]any)
	if !ok {
		return typeErr(f.Type(), v)
	}
	var out []string
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return fmt.Errorf("expected an array of quoted strings, got %s in it", tomlTypeName(e))
		}
		out = append(out, s)
	}
	f.Set(reflect.ValueOf(out))
	return nil
}

func typeErr(t reflect.Type, v any) error {
	want := map[reflect.Type]string{
		reflect.TypeFor[Size]():     `a size such as "2GiB"`,
		reflect.TypeFor[Duration](): `a duration such as "5s"`,
	}[t]
	if want == "" {
		switch t.Kind() {
		case reflect.String:
			want = "a quoted string"
		case reflect.Int:
			want = "an integer"
		case reflect.Bool:
			want = "true or false"
		case reflect.Slice:
			want = "an array of quoted strings"
		default:
			want = "a quoted string" // netip.Prefix and other text values
		}
	}
	return fmt.Errorf("expected %s, got %s", want, tomlTypeName(v))
}

func tomlTypeName(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case int64:
		return fmt.Sprintf("the integer %d", x)
	case float64:
		return fmt.Sprintf("the number %v", x)
	case bool:
		return fmt.Sprintf("%v", x)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("a %T", v) // dates and times
	}
}

// suggest returns the known key closest to an unknown one, or "".
func suggest(unknown string) string {
	best, bestDist := "", 4
	u := strings.ToLower(unknown)
	for _, k := range Keys() {
		if len(u) >= 3 && (strings.HasPrefix(k, u) || strings.HasSuffix(k, u)) {
			return k
		}
		if d := levenshtein(u, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
