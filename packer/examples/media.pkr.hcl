# K-PaaS media from a bundle: a qcow2 VM template and a hybrid ISO, named
# after the bundle. With the plugin installed offline (make packer-plugin):
#
#   PACKER_PLUGIN_PATH=$PWD/out/packer/plugins CHECKPOINT_DISABLE=1 \
#     packer build -var bundle=out/demo-bundle packer/examples/media.pkr.hcl
packer {
  required_plugins {
    kpaas = {
      version = ">= 0.1.0"
      source  = "github.com/k-paas/kpaas"
    }
  }
}

variable "bundle" {
  type        = string
  description = "A bundle folder (kpaas bake) or an exported bundle (kpaas bundle export)."
}

variable "public_key" {
  type        = string
  default     = ""
  description = "The key that signed the bundle (kpaas key generate); empty: not checked."
}

variable "output_directory" {
  type    = string
  default = "output-media"
}

data "kpaas-bundle" "this" {
  bundle = var.bundle
}

source "kpaas" "node" {
  bundle           = var.bundle
  public_key       = var.public_key
  formats          = ["qcow2", "iso"]
  disk_size        = "8G"
  output_directory = var.output_directory
  output_name      = "${data.kpaas-bundle.this.name}-${data.kpaas-bundle.this.version}"
}

build {
  sources = ["source.kpaas.node"]

  post-processor "manifest" {
    output = "${var.output_directory}/packer-manifest.json"
  }
}
