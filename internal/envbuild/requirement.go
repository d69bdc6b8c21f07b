package envbuild

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// A requirement string comes from an account and ends up on uv's command
// line, where it can name anything uv can install: a package on the index,
// but also a directory, archive or repository on this host. So it is parsed
// with the PEP 508 grammar (the one pip's and uv's parsers implement), and
// what it points at is judged from the parse, never from its first bytes:
// "pkg @ git+file:///srv/x" and "x/../../srv/x" look like neither a path
// nor a URL to a prefix check.
//
// Grammar (PEP 508, whitespace already collapsed to single spaces):
//
//	specification = wsp* ( url_req | name_req ) wsp*
//	name_req      = name wsp* extras? wsp* versionspec? wsp* quoted_marker?
//	url_req       = name wsp* extras? wsp* '@' wsp* URI (wsp+ quoted_marker)?
//	extras        = '[' wsp* (identifier (wsp* ',' wsp* identifier)*)? wsp* ']'
//	versionspec   = '(' version_many ')' | version_many
//	version_many  = version_one (wsp* ',' version_one)*
//	version_one   = wsp* version_cmp wsp* version wsp*
//	quoted_marker = ';' wsp* marker
//	marker        = marker_and (wsp* 'or' marker_and)*
//	marker_and    = marker_expr (wsp* 'and' marker_expr)*
//	marker_expr   = wsp* '(' marker wsp* ')' | marker_var marker_op marker_var
//
// Besides PEP 508 strings, uv accepts a bare URL or path; a bare remote URL
// is kept (as before), a bare path is a local form.

// requirement is one parsed requirement string.
type requirement struct {
	name   string   // PEP 503 canonical; "" for a bare URL or path
	extras []string // PEP 685 canonical, sorted, deduplicated
	specs  []string // "op version" clauses without whitespace, sorted
	url    string   // the direct reference after '@', or the bare URL or path
	bare   bool     // no name: url is the whole requirement
	marker string   // as written (whitespace collapsed): rewriting it is not always meaning-preserving
	// local says why the requirement installs something from this host
	// ("" when it does not); refused why it can never be installed.
	local, refused string
}

// String is the requirement's canonical form, the one environment keys hash.
func (r requirement) String() string {
	var b strings.Builder
	if r.bare {
		b.WriteString(r.url)
	} else {
		b.WriteString(r.name)
		if len(r.extras) > 0 {
			b.WriteString("[" + strings.Join(r.extras, ",") + "]")
		}
		if r.url != "" {
			b.WriteString(" @ " + r.url)
		} else {
			b.WriteString(strings.Join(r.specs, ","))
		}
	}
	if r.marker != "" {
		if r.url != "" {
			// PEP 508 needs whitespace before the ';' after a URL,
			// since URLs may hold ';'.
			b.WriteString(" ")
		}
		b.WriteString("; " + r.marker)
	}
	return b.String()
}

// remoteSchemes are the URL schemes a requirement may use: what uv fetches
// over the network. Everything else (file:, git+file:, a scheme uv might
// learn later) is refused rather than guessed about.
var remoteSchemes = []string{"http", "https", "git+http", "git+https", "git+ssh"}

// archiveSuffixes are the file names uv reads as a path to an archive even
// when they parse as a distribution name ("pkg-1.0.tar.gz").
var archiveSuffixes = []string{".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar.lz", ".tlz", ".tar.lzma"}

// parseRequirement parses one requirement string. Local forms parse (their
// local field says why they are local); the caller decides whether they are
// allowed. The error, if any, explains what is wrong and wraps
// ErrInvalidSpec.
func parseRequirement(raw string) (requirement, error) {
	s := strings.Join(strings.Fields(raw), " ")
	switch {
	case s == "":
		return requirement{}, fmt.Errorf("%w: empty requirement", ErrInvalidSpec)
	case strings.HasPrefix(s, "-"):
		// uv would read it as an option (-e path, -r file, --index-url ...).
		return requirement{}, fmt.Errorf("%w: requirement %q looks like an option; only requirement specifiers "+
			"(like \"six>=1.16\" or \"pkg @ https://host/pkg.whl\") are allowed, one per string", ErrInvalidSpec, s)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return requirement{}, fmt.Errorf("%w: requirement %q contains a control character", ErrInvalidSpec, s)
		}
	}
	p := &reqParser{s: s}
	r, err := p.requirement()
	if err != nil {
		if bare, ok := parseBare(s); ok {
			return bare, nil
		}
		return requirement{}, fmt.Errorf("%w: requirement %q is not a PEP 508 requirement (%v); write it as "+
			"name[extras] specifiers ; marker, or name @ https://... (like \"six>=1.16\")", ErrInvalidSpec, s, err)
	}
	return r, nil
}

// parseBare reads s as a bare URL or path (what uv accepts without a name),
// optionally followed by " ; marker". It reports false when s is neither.
func parseBare(s string) (requirement, bool) {
	target, marker, hasMarker := strings.Cut(s, " ;")
	if strings.ContainsRune(target, ' ') {
		return requirement{}, false
	}
	r := requirement{url: target, bare: true}
	if hasMarker {
		r.marker = strings.TrimSpace(marker)
		mp := &reqParser{s: r.marker}
		if mp.marker() != nil || !mp.eof() {
			return requirement{}, false
		}
	}
	if scheme, ok := urlScheme(target); ok && len(scheme) > 1 {
		// A URL: judged like a direct reference.
		r.local, r.refused = judgeURL(target)
		return r, true
	}
	if strings.ContainsAny(target, `/\`) || strings.HasPrefix(target, ".") || strings.HasPrefix(target, "~") || looksLikeArchive(target) {
		r.local = "a relative or absolute path"
		return r, true
	}
	return requirement{}, false
}

// urlScheme returns the RFC 3986 scheme u starts with, if any.
func urlScheme(u string) (string, bool) {
	i := strings.IndexByte(u, ':')
	if i <= 0 {
		return "", false
	}
	for j, c := range u[:i] {
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alpha && (j == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", false
		}
	}
	return strings.ToLower(u[:i]), true
}

// judgeURL says why the direct reference u installs from this host (local),
// or why it can never be installed (refused): a scheme uv would not fetch
// over the network, or a remote URL that could reach past what its source
// holds. Both are "" for an https:// or git+https:// URL of a remote host.
func judgeURL(u string) (local, refused string) {
	scheme, ok := urlScheme(u)
	if !ok || len(scheme) == 1 { // no scheme, or a Windows drive letter
		return "a relative or absolute path", ""
	}
	if slices.Contains(strings.Split(scheme, "+"), "file") {
		return "a " + scheme + ": URL", ""
	}
	if !slices.Contains(remoteSchemes, scheme) {
		return "", fmt.Sprintf("its URL scheme %q is not one of %s", scheme, strings.Join(remoteSchemes, ", "))
	}
	if strings.Contains(u, "${") {
		// uv expands ${VAR} in URLs: the server's environment would leak
		// into a request, or turn a URL into a path.
		return "", "it uses ${...}, which uv would expand from the server's environment"
	}
	_, rest, _ := strings.Cut(scheme, "+")
	if rest == "" {
		rest = scheme
	}
	parsed, err := url.Parse(rest + u[len(scheme):])
	if err != nil || parsed.Host == "" || parsed.Opaque != "" {
		return "", "its URL names no remote host"
	}
	if strings.HasPrefix(parsed.Host, "-") || strings.HasPrefix(parsed.User.Username(), "-") {
		// git would hand "-oProxyCommand=..." to ssh as an option.
		return "", "its host starts with '-'"
	}
	for _, part := range []string{parsed.Path, parsed.Fragment} {
		for _, seg := range strings.FieldsFunc(part, func(c rune) bool { return c == '/' || c == '\\' || c == '=' || c == '&' }) {
			if seg == ".." {
				return "", "its URL climbs out of its source with '..'"
			}
		}
	}
	return "", ""
}

func looksLikeArchive(name string) bool {
	lower := strings.ToLower(name)
	return slices.ContainsFunc(archiveSuffixes, func(s string) bool { return strings.HasSuffix(lower, s) })
}

// reqParser is a recursive-descent parser over one whitespace-collapsed
// requirement string.
type reqParser struct {
	s   string
	pos int
}

func (p *reqParser) eof() bool { return p.pos >= len(p.s) }

func (p *reqParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.pos]
}

// wsp skips whitespace and reports whether there was any.
func (p *reqParser) wsp() bool {
	start := p.pos
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
	return p.pos > start
}

func (p *reqParser) errorf(format string, args ...any) error {
	return fmt.Errorf("at column %d: %s", p.pos+1, fmt.Sprintf(format, args...))
}

func (p *reqParser) accept(tok string) bool {
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// identifier = letterOrDigit (('-' | '_' | '.')* letterOrDigit)*
func (p *reqParser) identifier() string {
	start := p.pos
	if !isAlnum(p.peek()) {
		return ""
	}
	end := p.pos + 1
	for i := end; i < len(p.s); i++ {
		c := p.s[i]
		if isAlnum(c) {
			end = i + 1
		} else if c != '-' && c != '_' && c != '.' {
			break
		}
	}
	p.pos = end
	return p.s[start:end]
}

func (p *reqParser) requirement() (requirement, error) {
	p.wsp()
	rawName := p.identifier()
	if rawName == "" {
		return requirement{}, p.errorf("expected a distribution name")
	}
	r := requirement{name: canonicalName(rawName)}
	p.wsp()
	if p.peek() == '[' {
		extras, err := p.extras()
		if err != nil {
			return requirement{}, err
		}
		r.extras = extras
		p.wsp()
	}
	if p.accept("@") {
		p.wsp()
		start := p.pos
		for !p.eof() && p.peek() != ' ' && p.peek() != '\t' {
			p.pos++
		}
		r.url = p.s[start:p.pos]
		if r.url == "" {
			return requirement{}, p.errorf("expected a URL after '@'")
		}
		r.local, r.refused = judgeURL(r.url)
		if !p.wsp() || p.eof() {
			return r, p.end()
		}
		if p.peek() != ';' {
			return requirement{}, p.errorf("expected ';' and a marker after the URL")
		}
	} else {
		specs, err := p.versionSpec()
		if err != nil {
			return requirement{}, err
		}
		r.specs = specs
		p.wsp()
		if p.eof() && len(specs) == 0 && len(r.extras) == 0 && looksLikeArchive(rawName) {
			// uv reads "pkg-1.0.tar.gz" as a file in its working directory:
			// a path, kept as written.
			return requirement{url: rawName, bare: true,
				local: "an archive's file name, which uv reads as a path"}, nil
		}
	}
	if p.accept(";") {
		p.wsp()
		start := p.pos
		if err := p.marker(); err != nil {
			return requirement{}, err
		}
		r.marker = strings.TrimSpace(p.s[start:p.pos])
	}
	return r, p.end()
}

func (p *reqParser) end() error {
	p.wsp()
	if !p.eof() {
		return p.errorf("unexpected %q", p.s[p.pos:])
	}
	return nil
}

func (p *reqParser) extras() ([]string, error) {
	p.pos++ // '['
	var out []string
	p.wsp()
	if p.accept("]") {
		return nil, nil
	}
	for {
		p.wsp()
		e := p.identifier()
		if e == "" {
			return nil, p.errorf("expected an extra's name")
		}
		out = append(out, canonicalName(e))
		p.wsp()
		if p.accept("]") {
			break
		}
		if !p.accept(",") {
			return nil, p.errorf("expected ',' or ']' in the extras list")
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

var versionOps = []string{"===", "~=", "==", "!=", "<=", ">=", "<", ">"} // longest first

func (p *reqParser) versionCmp() string {
	for _, op := range versionOps {
		if p.accept(op) {
			return op
		}
	}
	return ""
}

// versionSpec = '(' version_many ')' | version_many | nothing.
func (p *reqParser) versionSpec() ([]string, error) {
	paren := p.accept("(")
	if !paren && !strings.ContainsRune("<>=!~", rune(p.peek())) {
		if !p.eof() && p.peek() != ';' {
			return nil, p.errorf("expected a version specifier, ';' or the end, not %q", p.s[p.pos:])
		}
		return nil, nil
	}
	var specs []string
	for {
		p.wsp()
		op := p.versionCmp()
		if op == "" {
			return nil, p.errorf("expected a version operator (one of %s)", strings.Join(versionOps, " "))
		}
		p.wsp()
		start := p.pos
		for !p.eof() && (isAlnum(p.peek()) || strings.IndexByte("-_.*+!", p.peek()) >= 0) {
			p.pos++
		}
		if p.pos == start {
			return nil, p.errorf("expected a version after %q", op)
		}
		specs = append(specs, op+p.s[start:p.pos])
		p.wsp()
		if !p.accept(",") {
			break
		}
	}
	if paren && !p.accept(")") {
		return nil, p.errorf("expected ')' to close the version specifier")
	}
	slices.Sort(specs)
	return specs, nil
}

// markerVars are the environment markers of PEP 508, with the dotted and
// legacy spellings packaging still accepts, and the names of PEP 751.
var markerVars = []string{
	"python_version", "python_full_version", "os_name", "sys_platform", "platform_release",
	"platform_system", "platform_version", "platform_machine", "platform_python_implementation",
	"implementation_name", "implementation_version", "extra", "extras", "dependency_groups",
	"os.name", "sys.platform", "platform.version", "platform.machine", "platform.python_implementation",
	"python_implementation",
}

func (p *reqParser) marker() error {
	if err := p.markerAnd(); err != nil {
		return err
	}
	for p.keyword("or") {
		if err := p.markerAnd(); err != nil {
			return err
		}
	}
	return nil
}

func (p *reqParser) markerAnd() error {
	if err := p.markerExpr(); err != nil {
		return err
	}
	for p.keyword("and") {
		if err := p.markerExpr(); err != nil {
			return err
		}
	}
	return nil
}

// keyword accepts wsp* kw when a word boundary follows it.
func (p *reqParser) keyword(kw string) bool {
	save := p.pos
	p.wsp()
	if p.accept(kw) && (p.eof() || !isAlnum(p.peek()) && p.peek() != '_' && p.peek() != '.') {
		return true
	}
	p.pos = save
	return false
}

func (p *reqParser) markerExpr() error {
	p.wsp()
	if p.accept("(") {
		if err := p.marker(); err != nil {
			return err
		}
		p.wsp()
		if !p.accept(")") {
			return p.errorf("expected ')' in the marker")
		}
		return nil
	}
	if err := p.markerVar(); err != nil {
		return err
	}
	if err := p.markerOp(); err != nil {
		return err
	}
	return p.markerVar()
}

func (p *reqParser) markerVar() error {
	p.wsp()
	if q := p.peek(); q == '\'' || q == '"' {
		end := strings.IndexByte(p.s[p.pos+1:], q)
		if end < 0 {
			return p.errorf("unterminated string in the marker")
		}
		p.pos += end + 2
		return nil
	}
	start := p.pos
	for !p.eof() && (p.peek() >= 'a' && p.peek() <= 'z' || p.peek() == '_' || p.peek() == '.') {
		p.pos++
	}
	if v := p.s[start:p.pos]; !slices.Contains(markerVars, v) {
		p.pos = start
		return p.errorf("expected a marker variable (like python_version) or a quoted string")
	}
	return nil
}

func (p *reqParser) markerOp() error {
	p.wsp()
	if p.versionCmp() != "" {
		return nil
	}
	if p.keyword("in") {
		return nil
	}
	if p.keyword("not") && p.keyword("in") {
		return nil
	}
	return p.errorf("expected a marker operator (like == or in)")
}
