package envbuild

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeRequirement(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"trim", "  six  ", "six"},
		{"name case and separators", "Foo_Bar.baz>=1.0", "foo-bar-baz>=1.0"},
		{"repeated separators", "zope..interface", "zope-interface"},
		{"extras and specifier whitespace", "requests [Security , socks] >= 2.0 , < 3", "requests[security,socks]<3,>=2.0"},
		{"empty extras dropped", "six[]", "six"},
		{"parenthesized specifier", "six (>=1.0)", "six>=1.0"},
		{"marker whitespace collapsed", "six>=1;  python_version <   '3.12'", "six>=1; python_version < '3.12'"},
		{"direct reference", "Pkg@https://example.com/pkg-1.0-py3-none-any.whl", "pkg @ https://example.com/pkg-1.0-py3-none-any.whl"},
		{"direct reference with marker kept", "pkg @ https://x/y.whl ; python_version>'3'", "pkg @ https://x/y.whl ; python_version>'3'"},
		{"bare url left to uv", "  https://example.com/a.whl ", "https://example.com/a.whl"},
		{"version case kept", "Django==4.2RC1", "django==4.2RC1"},
		{"inner whitespace collapsed", "six\t>=\n1.0", "six>=1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalizeRequirement(tt.in, false)
			if err != nil {
				t.Fatalf("normalizeRequirement(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("normalizeRequirement(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizeRequirementRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"blank", "   "},
		{"requirements file option", "-r /etc/passwd"},
		{"index option", "--index-url=http://evil.example"},
		{"two names", "six foo"},
		{"unclosed extras", "requests[security"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalizeRequirement(tt.in, false)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("normalizeRequirement(%q) = %q, %v; want ErrInvalidSpec", tt.in, got, err)
			}
		})
	}
}

func TestNormalizeRequirementsSortsAndDedupes(t *testing.T) {
	got, err := normalizeRequirements([]string{"six", " Six ", "PyJokes", "cowsay>=6", "cowsay >= 6"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cowsay>=6", "pyjokes", "six"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("normalizeRequirements (-want +got):\n%s", diff)
	}
}

func TestKey(t *testing.T) {
	b := &Builder{uvVersion: "0.13.8"}
	key := func(t *testing.T, s Spec) string {
		t.Helper()
		k, err := b.Key(s)
		if err != nil {
			t.Fatalf("Key(%+v): %v", s, err)
		}
		return k
	}
	base := Spec{Python: "3.11", Requirements: []string{"pyjokes", "cowsay", "six"}}
	same := []struct {
		name string
		spec Spec
	}{
		{"reordered", Spec{Python: "3.11", Requirements: []string{"six", "pyjokes", "cowsay"}}},
		{"case and whitespace", Spec{Python: " 3.11 ", Requirements: []string{"PyJokes ", "Cowsay", " six"}}},
		{"duplicates", Spec{Python: "3.11", Requirements: []string{"six", "pyjokes", "cowsay", "SIX"}}},
	}
	for _, tt := range same {
		t.Run("same/"+tt.name, func(t *testing.T) {
			if got, want := key(t, tt.spec), key(t, base); got != want {
				t.Errorf("key differs from %+v's", base)
			}
		})
	}
	different := []struct {
		name string
		spec Spec
	}{
		{"python", Spec{Python: "3.12", Requirements: base.Requirements}},
		{"fewer requirements", Spec{Python: "3.11", Requirements: []string{"pyjokes", "cowsay"}}},
		{"pinned", Spec{Python: "3.11", Requirements: []string{"pyjokes", "cowsay", "six==1.17.0"}}},
	}
	for _, tt := range different {
		t.Run("different/"+tt.name, func(t *testing.T) {
			if got, other := key(t, tt.spec), key(t, base); got == other {
				t.Errorf("key equals %+v's", base)
			}
		})
	}
	t.Run("different/uv version", func(t *testing.T) {
		other := &Builder{uvVersion: "0.14.0"}
		k, err := other.Key(base)
		if err != nil {
			t.Fatal(err)
		}
		if k == key(t, base) {
			t.Error("key does not depend on the uv version")
		}
	})
	if k := key(t, base); len(k) != 64 {
		t.Errorf("key %q is not hex sha256", k)
	}

	invalid := []struct {
		name string
		spec Spec
	}{
		{"empty python", Spec{}},
		{"major only", Spec{Python: "3"}},
		{"patch version", Spec{Python: "3.11.7"}},
		{"option requirement", Spec{Python: "3.11", Requirements: []string{"--pre"}}},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			if _, err := b.Key(tt.spec); !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("Key(%+v) error = %v, want ErrInvalidSpec", tt.spec, err)
			}
		})
	}
}

func TestUVErrorText(t *testing.T) {
	out := "Using Python 3.11.7 environment at: x\nerror: No solution found when resolving dependencies\n  cause: Because no-such-package-xyz-atoll was not found"
	want := "error: No solution found when resolving dependencies\n  cause: Because no-such-package-xyz-atoll was not found"
	if got := uvErrorText(out); got != want {
		t.Errorf("uvErrorText = %q, want %q", got, want)
	}
}

func TestMajorMinor(t *testing.T) {
	for in, want := range map[string]string{"3.11.7": "3.11", "3.13.0rc1": "3.13", "3.9": "3.9", "3": "", "x.y": ""} {
		if got := majorMinor(in); got != want {
			t.Errorf("majorMinor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProvidedRequirementsAreDropped(t *testing.T) {
	b := &Builder{provided: canonicalNames([]string{"atoll"})}
	tests := []struct {
		name string
		reqs []string
		want []string
	}{
		{"plain", []string{"cowsay", "atoll"}, []string{"cowsay"}},
		{"versioned and spelled otherwise", []string{"Atoll>=0.1", "six"}, []string{"six"}},
		{"a longer name is kept", []string{"atoll-extras"}, []string{"atoll-extras"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.normalize(Spec{Python: "3.11", Requirements: tt.reqs})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Requirements); diff != "" {
				t.Errorf("requirements (-want +got):\n%s", diff)
			}
		})
	}
}
