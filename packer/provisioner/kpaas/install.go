package kpaas

import (
	"fmt"
	"path"
	"strings"

	"kpaas.dev/appliance/internal/names"
)

// Mount is one bind mount unit: on a provisioned machine (no kpaas-init)
// it puts a folder of the media directory where kpaas-init mounts the
// media's part, read-only.
type Mount struct {
	What, Where string
}

// Unit is the mount unit's name (systemd-escape --path --suffix=mount).
func (m Mount) Unit() string {
	return strings.ReplaceAll(strings.TrimPrefix(m.Where, "/"), "/", "-") + ".mount"
}

// Content is the unit file.
func (m Mount) Content() string {
	return fmt.Sprintf(`# Installed by packer-plugin-kpaas: on a machine provisioned from a bundle
# (no kpaas-init), %s is bound read-only at %s, where kpaas-init
# mounts it on machines booted from kpaas media.
[Unit]
Description=K-PaaS media: %s
RequiresMountsFor=%s
Before=kpaas-agent.service

[Mount]
What=%s
Where=%s
Type=none
Options=bind,ro

[Install]
WantedBy=local-fs.target
`, m.What, m.Where, m.Where, m.What, m.What, m.Where)
}

// Mounts are the bind mounts of a media directory: the bundle and the
// ESP's files always, the configuration when there is one (otherwise the
// agent waits for a config disk, as on media).
func Mounts(mediaDir string, config bool) []Mount {
	ms := []Mount{
		{What: path.Join(mediaDir, "bundle"), Where: names.BundleDir},
		{What: path.Join(mediaDir, "esp"), Where: names.ESPDir},
	}
	if config {
		ms = append(ms, Mount{What: path.Join(mediaDir, "config"), Where: names.ConfigDir})
	}
	return ms
}

// DropIn is kpaas-agent.service's drop-in on a provisioned machine: the
// agent starts only once the media's folders are mounted.
func DropIn(ms []Mount) string {
	var where []string
	for _, m := range ms {
		where = append(where, m.Where)
	}
	return "# Installed by packer-plugin-kpaas: the media's folders are bind mounts here.\n[Unit]\nRequiresMountsFor=" + strings.Join(where, " ") + "\n"
}

// DropInPath is where DropIn goes.
const DropInPath = "/etc/systemd/system/kpaas-agent.service.d/10-provisioned.conf"

// installScript moves the checked uploads from the staging folder into
// place, as root: the bundle (replaced whole), the node files at their
// targets, kpaas-agent, its units and the media mounts; it enables the
// agent for the next boot and does not start it.
func installScript(staging, mediaDir string, p *Plan, reuse Reuse, ms []Mount, hasKey, hasConfig bool) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# packer-plugin-kpaas: install bundle %s %s (run as root)", p.Name, p.Version)
	w("S=%s", staging)
	w("M=%s", mediaDir)
	w(`PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"`)
	w(`cd "$S"`)
	for _, f := range p.Bundle {
		if reuse.Blobs[f.SHA256] {
			w(`ln "$M/bundle/%s" "$S/bundle/%s" 2>/dev/null || cp "$M/bundle/%s" "$S/bundle/%s"`, f.Rel, f.Rel, f.Rel, f.Rel)
		}
	}
	w(`echo "kpaas: checking the upload"`)
	w(`sha256sum --quiet --strict -c upload.sha256`)
	w(`mkdir -p "$M"`)
	w(`rm -rf "$M/bundle.new" "$M/bundle.old" "$M/esp.new" "$M/config.new"`)
	w(`mv "$S/bundle" "$M/bundle.new"`)
	w(`chown -R 0:0 "$M/bundle.new"`)
	w(`chmod -R u=rwX,go=rX "$M/bundle.new"`)
	w(`mkdir -p "$M/esp.new/kpaas"`)
	if hasKey {
		w(`install -m 0644 "$S/bundle.pub" "$M/esp.new/%s"`, names.ESPPublicKey)
	}
	if hasConfig {
		w(`install -m 0644 "$S/cluster.yaml" "$M/esp.new/%s"`, names.ESPConfig)
		w(`mkdir -p "$M/config.new"`)
		w(`install -m 0644 "$S/cluster.yaml" "$M/config.new/cluster.yaml"`)
	}
	w(`echo "kpaas: bundle %s %s into $M/bundle"`, p.Name, p.Version)
	w(`for d in bundle esp config; do`)
	w(`  if [ -d "$M/$d.new" ]; then`)
	w(`    if [ -d "$M/$d" ]; then mv "$M/$d" "$M/$d.old"; fi`)
	w(`    mv "$M/$d.new" "$M/$d"`)
	w(`    rm -rf "$M/$d.old"`)
	w(`  fi`)
	w(`done`)
	for _, f := range p.NodeFiles {
		if reuse.Files[f.Target] {
			w(`chown 0:0 '%s' && chmod %s '%s'`, f.Target, f.Mode, f.Target)
			continue
		}
		w(`install -D -o 0 -g 0 -m %s "$S/files/%s" '%s'`, f.Mode, f.Blob.Hex, f.Target)
	}
	if len(p.NodeFiles) > 0 {
		w(`echo "kpaas: %d node files at their targets"`, len(p.NodeFiles))
	}
	w(`install -D -o 0 -g 0 -m 0755 "$S/kpaas-agent" %s`, AgentPath)
	w(`install -d /etc/systemd/system`)
	for _, u := range []string{"kpaas-agent.service", "kpaas-agent-renew.service", "kpaas-agent-renew.timer"} {
		w(`install -m 0644 "$S/units/%s" /etc/systemd/system/%s`, u, u)
	}
	var units []string
	for _, m := range ms {
		w(`mkdir -p "%s"`, m.What)
		w(`install -m 0644 "$S/units/%s" /etc/systemd/system/%s`, m.Unit(), m.Unit())
		units = append(units, m.Unit())
	}
	w(`install -D -m 0644 "$S/units/10-provisioned.conf" %s`, DropInPath)
	w(`systemctl daemon-reload || true`)
	w(`systemctl enable %s kpaas-agent.service kpaas-agent-renew.timer`, strings.Join(units, " "))
	w(`cd /`)
	w(`rm -rf "$S"`)
	w(`echo "kpaas: kpaas-agent enabled; it runs at the next boot"`)
	return b.String()
}
