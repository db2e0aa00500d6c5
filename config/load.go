package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable tariq reads.
const EnvPrefix = "TARIQ"

// EnvConfigFile names the config file when --config is not given.
const EnvConfigFile = EnvPrefix + "_CONFIG"

// Options says where Load reads from.
type Options struct {
	// File is the YAML file; empty means TARIQ_CONFIG, else DefaultFile if it exists.
	File string
	// Set holds flag overrides by key path ("relay.realm"), the strongest source.
	Set map[string]string
}

// Loaded is a loaded configuration and where it came from.
type Loaded struct {
	*Config
	// File is the config file that was read, or "" when running on defaults.
	File string
}

// EnvName returns the environment variable that sets key: TARIQ_ followed by
// the upper-cased path joined by underscores.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys returns every key path the config knows, sorted.
func Keys() []string {
	return slices.Sorted(maps.Keys(flatten(Default())))
}

// Load reads the configuration from defaults, the YAML file, TARIQ_*
// environment variables and opts.Set, in rising precedence, then validates
// it. A returned error joins one *FieldError per problem (or is a single
// file error); the returned *Loaded is nil whenever err is not.
func Load(opts Options) (*Loaded, error) {
	defaults := flatten(Default())
	v := viper.New()
	v.SetConfigType("yaml")
	for key, val := range defaults {
		v.SetDefault(key, val)
		if err := v.BindEnv(key, EnvName(key)); err != nil {
			return nil, err
		}
	}

	var problems []error
	file, explicit := opts.File, opts.File != ""
	if !explicit {
		if f := os.Getenv(EnvConfigFile); f != "" {
			file, explicit = f, true
		}
	}
	if !explicit {
		if _, err := os.Stat(DefaultFile); err == nil {
			file = DefaultFile
		}
	}
	var rawFile map[string]any
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is already named
			}
			return nil, &FileError{File: file, Msg: err.Error(), Err: err}
		}
		if rawFile, err = parseFile(file, b, defaults); err != nil {
			return nil, err
		}
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			return nil, &FileError{File: file, Msg: err.Error(), Err: err}
		}
	}

	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") && name != EnvConfigFile && !knownEnv(defaults, name) {
			problems = append(problems, &FieldError{Key: name, Msg: "unknown environment variable (no such config key)"})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(opts.Set)) {
		if _, ok := defaults[key]; !ok {
			problems = append(problems, &FieldError{Key: key, Msg: "unknown key"})
			continue
		}
		v.Set(key, opts.Set[key])
	}

	// Unknown keys are found by comparing key sets rather than through
	// mapstructure's ErrorUnused, which stays silent about a section's
	// unknown keys whenever that section has another error.
	for _, key := range slices.Sorted(slices.Values(v.AllKeys())) {
		if _, ok := defaults[key]; !ok && !strings.HasPrefix(key, "relay.users.") {
			problems = append(problems, &FieldError{Key: key, Msg: "unknown key"})
		}
	}
	cfg := &Config{}
	err := v.Unmarshal(cfg, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = decodeHook()
		dc.ZeroFields = true
	})
	problems = append(problems, decodeErrors(err)...)

	// Viper lowercases every key, map keys included; user names are case
	// sensitive in TURN, so take relay.users as the file spells it.
	if users, ok := fileUsers(rawFile); ok && !overridden(opts, "relay.users") {
		cfg.Relay.Users = users
	}

	// Validate even after decode problems, so one pass reports everything;
	// a key that failed to decode is zero, so its own checks are skipped.
	failed := map[string]bool{}
	for _, p := range problems {
		if fe, ok := p.(*FieldError); ok {
			failed[fe.Key] = true
		}
	}
	for _, p := range cfg.Validate() {
		if fe, ok := p.(*FieldError); !ok || !failed[fe.Key] {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return &Loaded{Config: cfg, File: file}, nil
}

// parseFile decodes the YAML text b of file, or returns one *FileError per
// problem, each with the line where it is.
func parseFile(file string, b []byte, defaults map[string]any) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		line, msg := syntaxError(b, err)
		return nil, &FileError{File: file, Line: line, Msg: msg, Err: err}
	}
	if len(doc.Content) == 0 { // empty, or only comments
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &FileError{File: file, Line: root.Line,
			Msg: "want a mapping of sections (server:, tls:, vpn:, relay:, web:), not a " + kindName(root)}
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := root.Content[i], root.Content[i+1]
		if isSection(defaults, k.Value) && val.Kind != yaml.MappingNode && val.Tag != "!!null" {
			errs = append(errs, &FileError{File: file, Line: val.Line,
				Msg: fmt.Sprintf("%s: want the section's keys indented under it, not a %s", k.Value, kindName(val))})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var raw map[string]any
	if err := doc.Decode(&raw); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &FileError{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
		}
		for _, e := range te.Errors { // duplicate keys, each "line N: …"
			line, msg := splitLine(e)
			errs = append(errs, &FileError{File: file, Line: line, Msg: msg, Err: err})
		}
		return nil, errors.Join(errs...)
	}
	return raw, nil
}

// syntaxError returns the line and text of a YAML syntax error. yaml.v3
// names the line where the enclosing block began, which may be far above
// the mistake, so the line is found again: the one after the longest run
// of leading lines that still parses.
func syntaxError(b []byte, err error) (line int, msg string) {
	line, msg = splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > 10000 { // a config file is never this long; keep yaml.v3's line
		return line, msg
	}
	for k := len(lines) - 1; k > 0; k-- {
		var n yaml.Node
		if yaml.Unmarshal(bytes.Join(lines[:k], nil), &n) == nil {
			return k + 1, msg
		}
	}
	return 1, msg
}

// splitLine splits yaml.v3's "line N: text" into N and text (0 and s when
// there is no line).
func splitLine(s string) (int, string) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "line ")
	if !ok {
		return 0, s
	}
	num, text, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return 0, s
	}
	return n, text
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	}
	return "mapping"
}

// isSection reports whether name is a config section (server, vpn, …)
// rather than a key.
func isSection(defaults map[string]any, name string) bool {
	for key := range defaults {
		if strings.HasPrefix(key, name+".") {
			return true
		}
	}
	return false
}

func knownEnv(defaults map[string]any, name string) bool {
	for key := range defaults {
		if EnvName(key) == name {
			return true
		}
	}
	return false
}

func overridden(opts Options, key string) bool {
	if _, ok := opts.Set[key]; ok {
		return true
	}
	_, ok := os.LookupEnv(EnvName(key))
	return ok
}

func fileUsers(raw map[string]any) (map[string]Secret, bool) {
	relay, ok := raw["relay"].(map[string]any)
	if !ok {
		return nil, false
	}
	users, ok := relay["users"].(map[string]any)
	if !ok {
		return nil, false
	}
	out := make(map[string]Secret, len(users))
	for name, pw := range users {
		out[name] = Secret(fmt.Sprint(pw))
	}
	return out, true
}

// decodeErrors turns mapstructure's joined decode errors into FieldErrors.
func decodeErrors(err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		de, ok := err.(*mapstructure.DecodeError)
		if !ok {
			if inner := errors.Unwrap(err); inner != nil {
				walk(inner)
				return
			}
		}
		if ok {
			msg := de.Unwrap()
			var inner *mapstructure.DecodeError
			for errors.As(msg, &inner) {
				de, msg = inner, inner.Unwrap()
			}
			out = append(out, &FieldError{Key: keyPath(de.Name()), Msg: cleanMsg(msg)})
			return
		}
		out = append(out, err)
	}
	walk(err)
	return out
}

// keyPath turns mapstructure's "relay.relay_ip[0]" into the config key "relay.relay_ip".
func keyPath(name string) string {
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	return name
}

func cleanMsg(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%q is not a valid %s", fmt.Sprint(pe.Value), pe.Expected.Type())
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("%v is not a valid %s", ue.Value, ue.Expected.Type())
	}
	return err.Error()
}

var (
	typAddr     = reflect.TypeFor[netip.Addr]()
	typPrefix   = reflect.TypeFor[netip.Prefix]()
	typRange    = reflect.TypeFor[PortRange]()
	typDuration = reflect.TypeFor[time.Duration]()
	typSecrets  = reflect.TypeFor[map[string]Secret]()
)

// decodeHook converts the strings that YAML, the environment and flags give
// into tariq's typed fields, with messages that say what was expected.
func decodeHook() mapstructure.DecodeHookFuncType {
	return func(from, to reflect.Type, data any) (any, error) {
		if s, ok := data.(string); ok {
			s = strings.TrimSpace(s)
			switch to {
			case typAddr:
				if s == "" {
					return netip.Addr{}, nil
				}
				a, err := netip.ParseAddr(s)
				if err != nil {
					return nil, fmt.Errorf("%q is not an IP address", s)
				}
				return a, nil
			case typPrefix:
				return parsePrefix(s)
			case typRange:
				var r PortRange
				return r, r.UnmarshalText([]byte(s))
			case typDuration:
				if n, err := strconv.Atoi(s); err == nil {
					return time.Duration(n) * time.Second, nil
				}
				d, err := time.ParseDuration(s)
				if err != nil {
					return nil, fmt.Errorf("%q is not a duration (like 25s, 24h or 1h30m)", s)
				}
				return d, nil
			case typSecrets:
				return parseUsers(s)
			}
			if to.Kind() == reflect.Slice {
				var parts []string
				for p := range strings.SplitSeq(s, ",") {
					if p = strings.TrimSpace(p); p != "" {
						parts = append(parts, p)
					}
				}
				return parts, nil
			}
		}
		if to == typDuration {
			switch n := data.(type) {
			case int:
				return time.Duration(n) * time.Second, nil
			case int64:
				return time.Duration(n) * time.Second, nil
			case float64:
				return time.Duration(n * float64(time.Second)), nil
			}
		}
		return data, nil
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP prefix (like 10.0.0.0/8) or address", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP prefix (like 10.0.0.0/8)", s)
	}
	return p, nil
}

// parseUsers reads "name=password,name2=password2" (the environment form of relay.users).
func parseUsers(s string) (map[string]Secret, error) {
	out := map[string]Secret{}
	if s == "" {
		return out, nil
	}
	for pair := range strings.SplitSeq(s, ",") {
		name, pw, ok := strings.Cut(pair, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("%q is not name=password", pair)
		}
		out[name] = Secret(pw)
	}
	return out, nil
}

// flatten turns a Config into key path → plain value (strings, lists of
// strings, numbers, booleans), the form viper's defaults and `tariq init` use.
func flatten(c *Config) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			key := t.Field(i).Tag.Get("mapstructure")
			if prefix != "" {
				key = prefix + "." + key
			}
			f := v.Field(i)
			if f.Kind() == reflect.Struct && f.Type() != typAddr && f.Type() != typPrefix && f.Type() != typRange {
				walk(key, f)
				continue
			}
			out[key] = plain(f)
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

func plain(v reflect.Value) any {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case fmt.Stringer:
		if s, ok := x.(Secret); ok {
			return s.Reveal()
		}
		if a, ok := x.(netip.Addr); ok && !a.IsValid() {
			return ""
		}
		return x.String()
	}
	switch v.Kind() {
	case reflect.Slice:
		out := make([]string, v.Len())
		for i := range v.Len() {
			out[i] = fmt.Sprint(plain(v.Index(i)))
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[k.String()] = plain(v.MapIndex(k))
		}
		return out
	case reflect.String:
		return v.String()
	}
	return v.Interface()
}
