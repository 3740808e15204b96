"""The Vagrantfile's libvirt switches (driver and CPU mode, detected or from BCFL_LIBVIRT_*),
rendered two ways: by Ruby with a small stand-in for `Vagrant.configure` that records every
setting (runs wherever ruby is), and by `vagrant validate` where Vagrant is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A stand-in for Vagrant: records `config.*` assignments per provider and the provisioners;
# /dev/kvm's presence is what BCFL_STUB_KVM says (0 or 1).
STUB = r"""
require "json"
$kvm = ENV.fetch("BCFL_STUB_KVM") == "1"
class << File
  %i[exist? readable? writable?].each do |m|
    orig = instance_method(m)
    define_method(m) { |p| p == "/dev/kvm" ? $kvm : orig.bind(self).call(p) }
  end
end
class Recorder
  attr_reader :data
  def initialize; @data = {}; end
  def method_missing(name, *args, **kw, &blk)
    key = name.to_s
    if key.end_with?("=")
      @data[key.chomp("=")] = args.first
    elsif blk && key == "provider"
      rec = Recorder.new
      blk.call(rec)
      (@data["providers"] ||= {})[args.first.to_s] = rec.data
    elsif key == "provision"
      (@data["provision"] ||= []) << { "kind" => args.first, **kw.transform_keys(&:to_s) }
    else
      @data[key] ||= Recorder.new
    end
  end
  def respond_to_missing?(*) = true
  def to_json(*a) = @data.to_json(*a)
end
module Vagrant
  def self.configure(_version)
    $config = Recorder.new
    yield $config
  end
end
load ARGV[0]
puts JSON.generate($config.data)
"""


def render(env: dict[str, str], kvm: bool, tmp_path: Path) -> dict[str, object]:
    stub = tmp_path / "stub.rb"
    stub.write_text(STUB)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BCFL_")}
    proc = subprocess.run(
        ["ruby", str(stub), str(REPO / "Vagrantfile")],
        env=clean | env | {"BCFL_STUB_KVM": "1" if kvm else "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(proc.stderr.strip().splitlines()[0])
    data = json.loads(proc.stdout)["vm"]  # config.vm.*
    assert isinstance(data, dict)
    return data


needs_ruby = pytest.mark.skipif(
    shutil.which("ruby") is None, reason="ruby is not installed (apt-get install ruby)"
)


@needs_ruby
@pytest.mark.parametrize(
    ("env", "kvm", "expected"),
    [
        ({}, True, {"driver": "kvm", "cpu_mode": "host-passthrough"}),
        ({}, False, {"driver": "qemu", "cpu_mode": "custom", "cpu_model": "Nehalem"}),
        ({"BCFL_LIBVIRT_DRIVER": "qemu"}, True, {"driver": "qemu", "cpu_mode": "custom"}),
        (
            {"BCFL_LIBVIRT_DRIVER": "qemu", "BCFL_LIBVIRT_CPU_MODE": "host-model"},
            False,
            {"driver": "qemu", "cpu_mode": "host-model"},
        ),
        (
            {"BCFL_LIBVIRT_CPU_MODE": "custom", "BCFL_LIBVIRT_CPU_MODEL": "Skylake-Client"},
            True,
            {"driver": "kvm", "cpu_mode": "custom", "cpu_model": "Skylake-Client"},
        ),
    ],
)
def test_libvirt_driver_and_cpu_mode(
    env: dict[str, str], kvm: bool, expected: dict[str, str], tmp_path: Path
) -> None:
    cfg = render(env, kvm, tmp_path)
    libvirt = cfg["providers"]["libvirt"]  # type: ignore[index]
    assert {k: libvirt.get(k) for k in expected} == expected
    if expected["cpu_mode"] != "custom":
        assert "cpu_model" not in libvirt


@needs_ruby
def test_a_bad_switch_is_named_and_extra_ca_files_are_uploaded(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"BCFL_LIBVIRT_DRIVER=\\?\"xen\\?\".*allowed: kvm"):
        render({"BCFL_LIBVIRT_DRIVER": "xen"}, True, tmp_path)
    pem = tmp_path / "proxy.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = render({"BCFL_EXTRA_CA": str(pem)}, True, tmp_path)
    prov = cfg["provision"]
    upload = {"kind": "file", "source": str(pem), "destination": "/tmp/bcfl-extra-ca-0.crt"}
    assert prov[0] == upload  # type: ignore[index]
    assert prov[1]["env"]["BCFL_EXTRA_CA"] == "/tmp/bcfl-extra-ca-0.crt"  # type: ignore[index]


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="Vagrant is not installed")
@pytest.mark.parametrize("env", [{}, {"BCFL_LIBVIRT_DRIVER": "qemu"}])
def test_vagrant_validate(env: dict[str, str], tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BCFL_")}
    proc = subprocess.run(
        ["vagrant", "validate"],
        cwd=REPO,
        env=clean
        | env
        | {
            "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
            "VAGRANT_HOME": str(tmp_path / "home"),
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
