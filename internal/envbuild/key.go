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
	// normalized requirement.
	distNameRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	nameSepRe  = regexp.MustCompile(`[-_.]+`)
)

// normalizeSpec validates spec and returns it with its requirements
// normalized, deduplicated and sorted, so equivalent specs share one key.
func normalizeSpec(spec Spec, allowLocal bool) (Spec, error) {
	py, err := normalizePython(spec.Python)
	if err != nil {
		return Spec{}, err
	}
	reqs, err := normalizeRequirements(spec.Requirements, allowLocal)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Python: py, Requirements: reqs}, nil
}

// normalize is normalizeSpec without the requirements the builder's
// Options.Provided covers.
func (b *Builder) normalize(spec Spec) (Spec, error) {
	s, err := normalizeSpec(spec, b.allowLocal)
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

func normalizeRequirements(reqs []string, allowLocal bool) ([]string, error) {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		n, err := normalizeRequirement(r, allowLocal)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// normalizeRequirement parses one PEP 508 requirement (requirement.go) and
// returns its canonical form: whitespace collapsed, the distribution name
// and extras normalized per PEP 503/685, whitespace dropped from version
// specifiers (whose clauses are sorted). Markers and URLs are kept as
// written, since rewriting them is not always meaning-preserving. A
// requirement naming something on this host is refused unless allowLocal.
func normalizeRequirement(raw string, allowLocal bool) (string, error) {
	r, err := parseRequirement(raw)
	if err != nil {
		return "", err
	}
	written := strings.Join(strings.Fields(raw), " ")
	if r.refused != "" {
		return "", fmt.Errorf("%w: requirement %q cannot be installed: %s; use a package name "+
			"(like \"six>=1.16\") or name @ https://host/path", ErrInvalidSpec, written, r.refused)
	}
	if r.local != "" && !allowLocal {
		return "", fmt.Errorf("%w: %w: requirement %q names a path on the server (%s); only packages "+
			"from the index or remote https:// and git+https:// URLs can be installed (the server's operator "+
			"can allow local requirements with --allow-local-requirements)", ErrInvalidSpec, ErrLocalRequirement, written, r.local)
	}
	return r.String(), nil
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
