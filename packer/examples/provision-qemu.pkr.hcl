# A site's own Debian or Ubuntu base image becomes a K-PaaS node image: the
# qemu builder boots it, the kpaas provisioner installs kpaas-agent, the
# node files and the bundle over SSH, and the image boots like kpaas media
# (kpaas-agent opens the bundle at /run/kpaas/bundle). The same provisioner
# block works after the vsphere-clone or openstack builders.
#
#   PACKER_PLUGIN_PATH=$PWD/out/packer/plugins CHECKPOINT_DISABLE=1 packer build \
#     -var base_disk=site.qcow2 -var kernel=vmlinuz -var initrd=initrd.img \
#     -var ssh_private_key_file=id_ed25519 -var bundle=out/demo-bundle \
#     packer/examples/provision-qemu.pkr.hcl
packer {
  required_plugins {
    kpaas = {
      version = ">= 0.1.0"
      source  = "github.com/k-paas/kpaas"
    }
  }
}

variable "bundle" { type = string }
variable "base_disk" { type = string }
variable "kernel" { type = string }
variable "initrd" { type = string }
variable "ssh_private_key_file" { type = string }

variable "cluster_config" {
  type    = string
  default = ""
}

variable "output_directory" {
  type    = string
  default = "output-node"
}

variable "serial_log" {
  type    = string
  default = "/dev/null"
}

source "qemu" "site" {
  disk_image       = true
  iso_url          = var.base_disk
  iso_checksum     = "none"
  format           = "qcow2"
  skip_resize_disk = true
  skip_compaction  = true
  accelerator      = "tcg"
  headless         = true
  memory           = 1024
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  # The base image here is a bare ext4 root: the kernel and initrd boot it
  # directly. A cloud image with a boot loader needs none of this.
  qemuargs = [
    ["-kernel", var.kernel],
    ["-initrd", var.initrd],
    ["-append", "root=/dev/vda rw console=ttyS0,115200"],
    ["-serial", "file:${var.serial_log}"],
  ]
  ssh_username         = "root"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"
  shutdown_command     = "systemctl poweroff"
  output_directory     = var.output_directory
  vm_name              = "node.qcow2"
}

build {
  sources = ["source.qemu.site"]

  provisioner "kpaas" {
    bundle         = var.bundle
    cluster_config = var.cluster_config
  }

  # What the machine looks like now (the agent runs at the next boot).
  provisioner "shell" {
    inline = [
      "systemctl is-enabled kpaas-agent.service run-kpaas-bundle.mount run-kpaas-esp.mount",
      "stat -c 'node file %a %U %n' /usr/local/bin/kubelet /etc/sysctl.d/99-kubernetes.conf /usr/bin/kpaas-agent",
      "ls /var/lib/kpaas-media/bundle",
    ]
  }
}
