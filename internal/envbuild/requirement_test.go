package envbuild

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The examples of PEP 508 ("Examples" and the grammar's test list), which
// must all parse, with their canonical forms.
func TestParseRequirementPEP508Examples(t *testing.T) {
	tests := []struct{ in, want string }{
		{"A", "a"},
		{"A.B-C_D", "a-b-c-d"},
		{"aa", "aa"},
		{"name", "name"},
		{"name<=1", "name<=1"},
		{"name>=3", "name>=3"},
		{"name>=3,<2", "name<2,>=3"},
		{"name@http://foo.com", "name @ http://foo.com"},
		{"name [fred,bar] @ http://foo.com ; python_version=='2.7'", "name[bar,fred] @ http://foo.com ; python_version=='2.7'"},
		{"name[quux, strange];python_version<'2.7' and platform_version=='2'", "name[quux,strange]; python_version<'2.7' and platform_version=='2'"},
		{"name; os_name=='a' or os_name=='b'", "name; os_name=='a' or os_name=='b'"},
		{"name; os_name=='a' and os_name=='b' or os_name=='c'", "name; os_name=='a' and os_name=='b' or os_name=='c'"},
		{"name; os_name=='a' and (os_name=='b' or os_name=='c')", "name; os_name=='a' and (os_name=='b' or os_name=='c')"},
		{"name; os_name=='a' or os_name=='b' and os_name=='c'", "name; os_name=='a' or os_name=='b' and os_name=='c'"},
		{"name; (os_name=='a' or os_name=='b') and os_name=='c'", "name; (os_name=='a' or os_name=='b') and os_name=='c'"},
		{"requests [security,tests] >= 2.8.1, == 2.8.* ; python_version < \"2.7\"", "requests[security,tests]==2.8.*,>=2.8.1; python_version < \"2.7\""},
		{"pip @ https://github.com/pypa/pip/archive/1.3.1.zip#sha1=da9234ee9982d4bbb3c72346a6de940a148ea686", "pip @ https://github.com/pypa/pip/archive/1.3.1.zip#sha1=da9234ee9982d4bbb3c72346a6de940a148ea686"},
		{"pkg @ git+https://github.com/o/r.git@v1.0#subdirectory=sub/dir", "pkg @ git+https://github.com/o/r.git@v1.0#subdirectory=sub/dir"},
		{"pkg @ git+ssh://git@github.com/o/r.git", "pkg @ git+ssh://git@github.com/o/r.git"},
		{"six===1.0", "six===1.0"},
		{"six~=1.16", "six~=1.16"},
		{"six!=1.0", "six!=1.0"},
		{"six; 'linux' in sys_platform", "six; 'linux' in sys_platform"},
		{"six; sys_platform not in 'win32 cygwin'", "six; sys_platform not in 'win32 cygwin'"},
		{"six; extra == 'test'", "six; extra == 'test'"},
		{"six; os.name == 'posix'", "six; os.name == 'posix'"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseRequirement(tt.in)
			if err != nil {
				t.Fatalf("parseRequirement(%q): %v", tt.in, err)
			}
			if r.local != "" || r.refused != "" {
				t.Errorf("parseRequirement(%q): local %q, refused %q; want a remote requirement", tt.in, r.local, r.refused)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("parseRequirement(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRequirementSyntaxErrors(t *testing.T) {
	for _, in := range []string{
		"six foo",
		"requests[security",
		"requests[security,]",
		"requests[,]",
		"six>=",
		"six>=1,",
		"six (>=1",
		"six==1 extra",
		"six; python_version",
		"six; python_version >= '3",
		"six; unknown_var == '1'",
		"six; python_version >= '3' and",
		"six; (python_version >= '3'",
		"six; python_version < '3' android",
		"pkg @",
		"pkg @ https://x/y.whl junk",
		"_six",
		"six\x00",
		"six\x01==1",
		"@ https://x/y.whl",
		"[x]",
		"six=>1",
		"six;",
	} {
		t.Run(in, func(t *testing.T) {
			got, err := normalizeRequirement(in, true)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("normalizeRequirement(%q) = %q, %v; want ErrInvalidSpec", in, got, err)
			}
			if errors.Is(err, ErrLocalRequirement) {
				t.Errorf("normalizeRequirement(%q): %v; a syntax error is not a local requirement", in, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", strings.Join(strings.Fields(in), " "))) {
				t.Errorf("normalizeRequirement(%q): %v; the message does not name the requirement", in, err)
			}
		})
	}
}

// localForms install something from the server's host: every one is refused
// with ErrLocalRequirement unless local requirements are allowed.
var localForms = []string{
	"pkg @ file:///srv/pkg",
	"pkg @ FILE:///srv/pkg",
	"pkg @ git+file:///srv/x",
	"pkg @ GIT+FILE:///srv/x",
	"pkg @ hg+file:///srv/x",
	"pkg @ svn+file:///srv/x",
	"pkg @ bzr+file:///srv/x",
	"pkg @ file:/srv/pkg",
	"pkg @ file://localhost/srv/pkg",
	"pkg @ /srv/pkg",
	"pkg @ ./pkg",
	"pkg @ ../pkg",
	"pkg @ ~/pkg",
	"pkg @ srv/pkg",
	"pkg @ C:\\pkg",
	"pkg[extra] @ file:///srv/pkg ; python_version > '3'",
	"file:///srv/pkg",
	"git+file:///srv/x",
	"/srv/pkg",
	"./pkg",
	"../pkg",
	".",
	"..",
	"~/pkg",
	"~root/pkg",
	"x/../../../../srv/x",
	"x/..",
	"pkg/",
	"pkg\\sub",
	"dist/pkg-1.0-py3-none-any.whl",
	"pkg-1.0.tar.gz",
	"pkg-1.0-py3-none-any.whl",
	"Pkg-1.0.ZIP",
	"./pkg ; python_version > '3'",
}

func TestLocalRequirementsRefused(t *testing.T) {
	for _, in := range localForms {
		t.Run(in, func(t *testing.T) {
			got, err := normalizeRequirement(in, false)
			if !errors.Is(err, ErrLocalRequirement) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("normalizeRequirement(%q, false) = %q, %v; want ErrLocalRequirement and ErrInvalidSpec", in, got, err)
			}
			for _, want := range []string{fmt.Sprintf("%q", strings.Join(strings.Fields(in), " ")), "--allow-local-requirements"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			// Allowed, each passes (uv judges it).
			if _, err := normalizeRequirement(in, true); err != nil {
				t.Errorf("normalizeRequirement(%q, true): %v", in, err)
			}
		})
	}
}

// Options, unsupported schemes and remote URLs that could climb out of their
// source are refused whether or not local requirements are allowed.
func TestRequirementsAlwaysRefused(t *testing.T) {
	for _, in := range []string{
		"-e ./pkg",
		"-e git+https://github.com/o/r.git",
		"--editable=./pkg",
		"-r /etc/passwd",
		"-c constraints.txt",
		"--index-url=http://evil.example",
		"--extra-index-url http://evil.example",
		"--trusted-host evil.example",
		"--find-links /srv",
		"  -r x",
		"pkg @ ftp://host/pkg.tar.gz",
		"pkg @ git+ext::sh -c touch /tmp/x",
		"pkg @ git+git://host/repo",
		"pkg @ ssh://host/repo",
		"pkg @ https://example.com/${HOME}/x.whl",
		"pkg @ git+ssh://-oProxyCommand=touch%20x/repo",
		"pkg @ git+ssh://-oProxyCommand=x@host/repo",
		"pkg @ https:///srv/pkg",
		"pkg @ https:/srv/pkg",
		"pkg @ https://host/../../srv/pkg",
		"pkg @ git+https://host/repo#subdirectory=../../x",
		"pkg @ data:text/plain,x",
		"ftp://host/pkg.tar.gz",
		"javascript:alert(1)",
	} {
		t.Run(in, func(t *testing.T) {
			for _, allow := range []bool{false, true} {
				got, err := normalizeRequirement(in, allow)
				if !errors.Is(err, ErrInvalidSpec) {
					t.Fatalf("normalizeRequirement(%q, %v) = %q, %v; want ErrInvalidSpec", in, allow, got, err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", strings.Join(strings.Fields(in), " "))) {
					t.Errorf("error %q does not name the requirement", err)
				}
			}
		})
	}
}

// The cases of the server's former prefix check, kept.
func TestLocalPathRequirements(t *testing.T) {
	tests := []struct {
		req  string
		want bool
	}{
		{"six", false},
		{"six==1.16.0", false},
		{"pkg @ https://example.org/pkg-1.0.tar.gz", false},
		{"pkg @ file:///srv/pkg", true},
		{"file:///srv/pkg", true},
		{"/srv/pkg", true},
		{"./pkg", true},
		{"pkg @ ~/pkg", true},
	}
	for _, tt := range tests {
		t.Run(tt.req, func(t *testing.T) {
			_, err := normalizeRequirement(tt.req, false)
			if got := errors.Is(err, ErrLocalRequirement); got != tt.want {
				t.Errorf("normalizeRequirement(%q): %v; local = %v, want %v", tt.req, err, got, tt.want)
			}
		})
	}
}

func TestKeyRefusesLocalRequirements(t *testing.T) {
	strict := &Builder{uvVersion: "0.13.8"}
	if _, err := strict.Key(Spec{Python: "3.11", Requirements: []string{"six", "pkg @ git+file:///srv/x"}}); !errors.Is(err, ErrLocalRequirement) {
		t.Errorf("Key with a git+file: requirement: %v; want ErrLocalRequirement", err)
	}
	allowing := &Builder{uvVersion: "0.13.8", allowLocal: true}
	if _, err := allowing.Key(Spec{Python: "3.11", Requirements: []string{"six", "pkg @ git+file:///srv/x"}}); err != nil {
		t.Errorf("Key with local requirements allowed: %v", err)
	}
}

func FuzzParseRequirement(f *testing.F) {
	for _, s := range localForms {
		f.Add(s)
	}
	for _, s := range []string{
		"six", "Foo_Bar.baz>=1.0", "requests [Security , socks] >= 2.0 , < 3", "six (>=1.0)",
		"six>=1;  python_version <   '3.12'", "pkg @ https://x/y.whl ; python_version>'3'",
		"https://example.com/a.whl", "name; (os_name=='a' or os_name=='b') and os_name=='c'",
		"pkg @ git+https://github.com/o/r.git@v1#subdirectory=a", "-e .", "six; 'a' not in extra",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		strict, err := normalizeRequirement(in, false)
		loose, looseErr := normalizeRequirement(in, true)
		if err == nil {
			if looseErr != nil || loose != strict {
				t.Fatalf("%q: accepted strictly as %q, but allowing local forms gives %q, %v", in, strict, loose, looseErr)
			}
			// What was accepted names nothing on this host, read again.
			r, perr := parseRequirement(strict)
			if perr != nil || r.local != "" || r.refused != "" {
				t.Fatalf("%q: accepted as %q, which parses to local %q, refused %q, %v", in, strict, r.local, r.refused, perr)
			}
			if strings.HasPrefix(strict, "-") {
				t.Fatalf("%q: accepted as the option %q", in, strict)
			}
			// Checked apart from judgeURL: a URL accepted is a remote one.
			if r.url != "" {
				lower := strings.ToLower(r.url)
				remote := false
				for _, scheme := range remoteSchemes {
					remote = remote || strings.HasPrefix(lower, scheme+"://")
				}
				if !remote {
					t.Fatalf("%q: accepted with the URL %q", in, r.url)
				}
			} else if r.name == "" || r.bare {
				t.Fatalf("%q: accepted as %q, neither a name nor a URL", in, strict)
			}
		}
		if looseErr != nil {
			return
		}
		// The canonical form is a fixed point.
		again, err := normalizeRequirement(loose, true)
		if err != nil || again != loose {
			t.Fatalf("%q: normalized to %q, which normalizes to %q, %v", in, loose, again, err)
		}
	})
}
