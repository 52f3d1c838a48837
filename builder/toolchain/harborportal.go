package toolchain

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Harbor's web portal, built from the same source archive as the rest of
// Harbor the way its make/photon/portal/Dockerfile builds it: npm ci from
// the archive's package-lock.json (scripts off), the API client generated
// from the swagger description, Angular's production build, the
// description as JSON, and the Swagger UI page of app-swagger-ui. Its
// packages come from the npm registry npm is configured with (like Go
// modules from the module proxy), at the versions of Harbor's lockfiles
// (Clarity aside, see portalClarityFix). It is optional (Options.HarborPortal, `make harbor-portal`):
// on 2 cores it takes longer than the rest of Harbor, and without it the
// portal image is a stand-in (see harborimages.go).
const (
	// HarborPortalHTML is the portal component's output: the web root
	// the portal image serves, as a tar below html/ (Angular's dist/,
	// swagger.json, the Swagger UI page).
	HarborPortalHTML = "harbor-portal-html.tar"
	// HarborPortalImage is the portal image's reference, the one chart
	// 1.19.1 names (with the tag set to the true version).
	HarborPortalImage = harborRepo + "harbor-portal:" + HarborVersion
	// harborPortalNPM is the npm version that installs the portal's
	// packages (the one of Harbor's node:22 build image).
	harborPortalNPM = "10.9.4"
	// MinNodeVersion is the oldest Node.js the portal's Angular 21 CLI
	// runs on.
	MinNodeVersion = "v20.19.0"
)

func harborPortalComponent() *component {
	tree := "harbor-" + HarborVersion
	portal := tree + "/src/portal"
	// The npm of the Node.js image Harbor's Makefile builds with (node 22,
	// npm 10): npm 11's ci refuses this lockfile, which lacks the optional
	// packages of other platforms. The Dockerfile's flags: no optional
	// packages (tree-sitter's native parsers, macOS's fsevents), and no
	// install scripts for the portal.
	npmCI := "npx --yes npm@" + harborPortalNPM + " ci --no-optional --no-audit --no-fund --loglevel=error"
	// swagger.json next to the portal, as the Dockerfile's node -e makes it.
	swaggerJSON := `node -e "const yaml = require('js-yaml'); const fs = require('fs');` +
		` fs.writeFileSync('swagger.json', JSON.stringify(yaml.load(fs.readFileSync('swagger.yaml', 'utf8'))));"`
	return &component{
		Name: "harbor-portal", Version: HarborVersion,
		Inputs:   []string{harborSource},
		Outputs:  []string{HarborPortalHTML},
		Cold:     "10–15 min",
		Revision: "html: dist/ swagger.json app-swagger-ui/dist/",
		Recipe: func(r *resolver) ([]command, error) {
			// The Dockerfile stamps the build with the time of the build
			// (scripts/generate-build-timestamp.js); the commit's time keeps
			// the clock out of the result (whether the web root is
			// reproducible is not settled: docs/harbor.md). git archive gives every entry
			// that time.
			stamp, err := archiveTime(filepath.Join(r.b.opts.SourceDir, harborSource))
			if err != nil {
				return nil, err
			}
			script := strings.Join([]string{
				"cd " + portal,
				"cp ../../api/v2.0/swagger.yaml swagger.yaml",
				npmCI + " --ignore-scripts",
				"npm run postinstall",
				`sed -i 's/^\( *buildTimestamp:\).*$/\1 ` + strconv.FormatInt(stamp, 10) + `,/' src/environments/environment.prod.ts`,
				"grep -q 'buildTimestamp: " + strconv.FormatInt(stamp, 10) + ",' src/environments/environment.prod.ts",
				"node --max_old_space_size=2048 node_modules/@angular/cli/bin/ng build --configuration production",
				swaggerJSON,
				"cp ../../LICENSE dist/",
				"cd app-swagger-ui",
				npmCI,
				"npm run build",
			}, " && ")
			return []command{
				{Prog: "tar", Args: []string{"-xzf", "$SRC/" + harborSource, portal, tree + "/api/v2.0/swagger.yaml", tree + "/LICENSE"}},
				{Prog: "node", Args: []string{"-e", "process.chdir('" + portal + "');\n" + portalClarityFix}},
				{Prog: "sh", Args: []string{"-ec", script}, Env: []string{
					"NODE_OPTIONS=--max_old_space_size=4096",
					"NG_CLI_ANALYTICS=false", // no question, no report
					"NG_FORCE_TTY=false",     // plain progress in logs
					"NPM_CONFIG_UPDATE_NOTIFIER=false",
					"SCARF_ANALYTICS=false", // swagger-ui's install script would report home
				}},
			}, nil
		},
		Finish: func(out string) error {
			// The web root, as the Dockerfile's three COPY lines fill
			// /usr/share/nginx/html.
			src := filepath.Join(out, portal)
			stage := filepath.Join(out, "stage")
			html := filepath.Join(stage, "html")
			// In the Dockerfile's order: a later file replaces an earlier one.
			for _, c := range [][2]string{{"dist", ""}, {"swagger.json", "swagger.json"}, {"app-swagger-ui/dist", ""}} {
				if err := copyTree(filepath.Join(src, c[0]), filepath.Join(html, c[1])); err != nil {
					return fmt.Errorf("portal %s: %w", c[0], err)
				}
			}
			if _, err := os.Stat(filepath.Join(html, "index.html")); err != nil {
				return fmt.Errorf("the portal build made no index.html: %w", err)
			}
			if err := writeTreeTar(filepath.Join(out, HarborPortalHTML), stage, time.Unix(0, 0)); err != nil {
				return err
			}
			return removeAll(out, tree, "stage")
		},
	}
}

// archiveTime is the modification time of a .tar.gz's first file or
// folder, in milliseconds since the epoch (git archive: the commit's time;
// its leading pax global header, which holds the commit id, has none).
func archiveTime(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		if h.Typeflag != tar.TypeXGlobalHeader {
			return h.ModTime.UnixMilli(), nil
		}
	}
}

// portalClarityFix moves the portal's package.json and lockfile from
// Clarity 18.0.0 to 18.2.0 and drops @clr/addons. Harbor v2.15.2 pins
// @clr/angular 18.0.0, which the npm registry does not serve (18.2.0 is
// the oldest 18 it has, with @clr/ui 18.2.0 as its peer), and @clr/addons
// 18.0.0, which it does not serve at all and which no source file of the
// portal imports. Harbor's lockfile records versions only (no download
// addresses, no integrity), so a version is all it pins.
const portalClarityFix = `const fs = require('fs');
const pin = {'@clr/angular': '18.2.0', '@clr/ui': '18.2.0'};
const drop = ['@clr/addons'];
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'));
const root = lock.packages[''];
for (const [name, version] of Object.entries(pin)) {
  if (!pkg.dependencies[name] || !lock.packages['node_modules/' + name]) throw new Error(name + ' is not a dependency any more');
  pkg.dependencies[name] = root.dependencies[name] = lock.packages['node_modules/' + name].version = version;
}
lock.packages['node_modules/@clr/angular'].peerDependencies['@clr/ui'] = pin['@clr/ui'];
for (const name of drop) {
  delete pkg.dependencies[name];
  delete root.dependencies[name];
  delete lock.packages['node_modules/' + name];
}
fs.writeFileSync('package.json', JSON.stringify(pkg, null, 2) + '\n');
fs.writeFileSync('package-lock.json', JSON.stringify(lock, null, 2) + '\n');
`
