// Data sets by name, as the CLI and the convnet-train binary take them (--data-path):
//
//   fashion-mnist                      Debian's dataset-fashion-mnist package (IDX, gzip)
//   DIR with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...   IDX files
//   DIR with train/ and val/ (or test/) class folders     ImageNet-style JPEG/PNG folders
//   generated[count=512;classes=4;channels=1;size=16;seed=1]   learnable generated images
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "convnet/data.h"

namespace convnet {

// Where Debian's dataset-fashion-mnist package puts its files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Fashion-MNIST's class names, in label order (its IDX files carry none).
const std::vector<std::string>& fashion_mnist_classes();

struct Dataset {
  std::shared_ptr<DataSource> train, test;
  std::string description;  // e.g. "IDX files in /usr/share/datasets/fashion-mnist"
  // In label order: the training source's, or Fashion-MNIST's for that set (empty when unknown).
  std::vector<std::string> class_names;
};

// Opens a data set named as above; `image_size` is the folder sources' decoded size (256 for
// AlexNet). ValueError naming the path and what was looked for when nothing fits.
Dataset open_dataset(const std::string& spec, int image_size = 256);

}  // namespace convnet
