"""Cortex-M firmware for an MCU deploy: TFLite Micro + CMSIS-NN built from a source tree the
user passes in, run under QEMU, measured from the binary.

* ``cores``: what each Cortex-M core is compiled with and which QEMU board runs it.
* ``toolchain``: arm-none-eabi-gcc, QEMU and the TFLM source tree, found or refused in one line.
* ``sources``: the library files a model needs and the op resolver generated from its ops.
* ``build``: the object cache, the test and deployment images.
* ``project``: the bundle's ``firmware/`` folder, a generated makefile that rebuilds the deployment image.
* ``qemu``: runs a test image and reads back its outputs and report.
* ``size``: flash and RAM from ``arm-none-eabi-size`` and the linker map.
* ``verify``: the deploy's firmware steps and checks.
"""
