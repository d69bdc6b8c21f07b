package envbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

var (
	pythonVersionRe = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	// distNameRe matches a PEP 508 distribution name at the start of a
	// requirement.
	distNameRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	nameSepRe  = regexp.MustCompile(`[-_.]+`)
)

// normalizeSpec validates spec and returns it with its requirements
// normalized, deduplicated and sorted, so equivalent specs share one key.
func normalizeSpec(spec Spec) (Spec, error) {
	py, err := normalizePython(spec.Python)
	if err != nil {
		return Spec{}, err
	}
	reqs, err := normalizeRequirements(spec.Requirements)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Python: py, Requirements: reqs}, nil
}

// normalize is normalizeSpec without the requirements the builder's
// Options.Provided covers.
func (b *Builder) normalize(spec Spec) (Spec, error) {
	s, err := normalizeSpec(spec)
	if err != nil || len(b.provided) == 0 {
		return s, err
	}
	s.Requirements = slices.DeleteFunc(s.Requirements, func(r string) bool {
		return slices.Contains(b.provided, requirementName(r))
	})
	return s, nil
}

func canonicalNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = canonicalName(n)
	}
	return out
}

func normalizePython(v string) (string, error) {
	v = strings.TrimSpace(v)
	if !pythonVersionRe.MatchString(v) {
		return "", fmt.Errorf("%w: python version %q is not major.minor (like \"3.11\")", ErrInvalidSpec, v)
	}
	return v, nil
}

func normalizeRequirements(reqs []string) ([]string, error) {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		n, err := normalizeRequirement(r)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// normalizeRequirement rewrites one PEP 508 requirement into a canonical
// form: whitespace collapsed, the distribution name and extras normalized
// per PEP 503/685, whitespace dropped from version specifiers (whose clauses
// are sorted). Markers and URLs are kept as written, since rewriting them is
// not always meaning-preserving. A string that does not start with a name
// (a bare URL or path) is only whitespace-collapsed; uv judges it.
func normalizeRequirement(r string) (string, error) {
	s := strings.Join(strings.Fields(r), " ")
	switch {
	case s == "":
		return "", fmt.Errorf("%w: empty requirement", ErrInvalidSpec)
	case strings.HasPrefix(s, "-"):
		// uv would read it as an option (-r file, --index-url ...).
		return "", fmt.Errorf("%w: requirement %q looks like an option; only requirement specifiers are allowed", ErrInvalidSpec, s)
	case strings.ContainsRune(s, 0):
		return "", fmt.Errorf("%w: requirement %q contains a NUL byte", ErrInvalidSpec, s)
	}
	name := distNameRe.FindString(s)
	rest := s[len(name):]
	if name == "" || strings.HasPrefix(rest, ":") || strings.HasPrefix(rest, "/") {
		return s, nil // a URL or path, not "name ..."
	}
	rest = strings.TrimSpace(rest)
	var b strings.Builder
	b.WriteString(canonicalName(name))

	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", fmt.Errorf("%w: requirement %q has an unclosed extras list", ErrInvalidSpec, s)
		}
		var extras []string
		for _, e := range strings.Split(rest[1:end], ",") {
			if e = strings.TrimSpace(e); e != "" {
				extras = append(extras, canonicalName(e))
			}
		}
		slices.Sort(extras)
		extras = slices.Compact(extras)
		if len(extras) > 0 {
			b.WriteString("[" + strings.Join(extras, ",") + "]")
		}
		rest = strings.TrimSpace(rest[end+1:])
	}

	if strings.HasPrefix(rest, "@") {
		// Direct reference: "name @ url [; marker]". PEP 508 requires
		// whitespace before a marker's ';' here, because URLs may hold ';'.
		ref := strings.TrimSpace(rest[1:])
		b.WriteString(" @ " + ref)
		return b.String(), nil
	}

	spec, marker, hasMarker := strings.Cut(rest, ";")
	spec = strings.Join(strings.Fields(spec), "")
	if spec != "" && !strings.ContainsRune("<>=!~(", rune(spec[0])) {
		// Dropping the space in "six foo" would name another package.
		return "", fmt.Errorf("%w: requirement %q: expected a version specifier after %q", ErrInvalidSpec, s, name)
	}
	if strings.HasPrefix(spec, "(") && strings.HasSuffix(spec, ")") {
		spec = spec[1 : len(spec)-1]
	}
	if spec != "" {
		clauses := strings.Split(spec, ",")
		slices.Sort(clauses)
		b.WriteString(strings.Join(clauses, ","))
	}
	if hasMarker {
		if marker = strings.TrimSpace(marker); marker != "" {
			b.WriteString("; " + marker)
		}
	}
	return b.String(), nil
}

// canonicalName is the PEP 503 normalized form of a distribution (or, per
// PEP 685, extra) name.
func canonicalName(n string) string {
	return strings.ToLower(nameSepRe.ReplaceAllString(n, "-"))
}

// envKey hashes a normalized spec with the installer's version: the same
// requirements resolved by another uv release may differ, so they get their
// own environment.
func envKey(spec Spec, uvVersion string, seedPip bool) string {
	h := sha256.New()
	fmt.Fprintf(h, "atoll-env/1\npython %s\nuv %s\n", spec.Python, uvVersion)
	if seedPip {
		fmt.Fprintf(h, "seed pip\n")
	}
	for _, r := range spec.Requirements {
		fmt.Fprintf(h, "req %s\n", r)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// runtimeKey names the runner's support directory for one Python version:
// a new lock makes a new directory.
func runtimeKey(python string, lock []byte, uvVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "atoll-runtime/2\npython %s\nuv %s\nlock %d\n", python, uvVersion, len(lock))
	h.Write(lock)
	return hex.EncodeToString(h.Sum(nil))
}

// requirementName is the canonical distribution name a normalized
// requirement starts with, or "" for a bare URL or path.
func requirementName(r string) string {
	name := distNameRe.FindString(r)
	if rest := r[len(name):]; strings.HasPrefix(rest, ":") || strings.HasPrefix(rest, "/") {
		return ""
	}
	return canonicalName(name)
}
